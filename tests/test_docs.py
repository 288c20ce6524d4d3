"""README.md stays true to the code."""

from __future__ import annotations

import inspect

from conftest import REPO

README = (REPO / "README.md").read_text()


def test_every_hookspec_signature_is_documented():
    from tlzoo.registry import hookspecs

    specs = [getattr(hookspecs, name) for name in dir(hookspecs) if name.startswith(("register_", "resolve_"))]
    assert len(specs) >= 4
    for spec in specs:
        assert spec.__doc__, f"hook {spec.__name__} needs a one-line docstring"
        signature = f"{spec.__name__}{inspect.signature(spec)}"
        assert f"`{signature}`" in README, f"README.md does not document {signature}"


def test_readme_names_the_two_commands_and_ci_runs_one_of_them():
    assert "make demo" in README and "make test" in README
    assert "make test" in (REPO / ".ci" / "run").read_text()


def test_layout_table_lists_the_three_packages():
    for folder, module in (("registry", "tlzoo.registry"), ("plugins", "tlzoo.plugins"), ("core", "tlzoo")):
        assert f"| `{folder}/` | `{module}` |" in README

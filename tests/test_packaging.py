"""The folder-to-package mapping: pyproject lists every package, wheels work, no bare imports."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import venv
from pathlib import Path

from conftest import REPO

TOP = {"core": "tlzoo", "plugins": "tlzoo.plugins", "registry": "tlzoo.registry"}


def test_packages_list_matches_folders_with_init():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert config["package-dir"] == {v: k for k, v in TOP.items()}
    found = set()
    for folder, package in TOP.items():
        for init in (REPO / folder).rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            relative = init.parent.relative_to(REPO / folder).parts
            found.add(".".join((package, *relative)))
    assert set(config["packages"]) == found


def test_no_bare_top_level_modules_after_loading_everything():
    code = (
        "import sys, tlzoo.registry as r, tlzoo.cli.main\n"
        "reg = r.get_registry()\n"
        "[reg.catalog(k) for k in ('backbones', 'readers', 'strategies')]\n"
        "bad = [m for m in ('core', 'plugins', 'registry') if m in sys.modules]\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    # run from the repo root, where the bare folders would be importable
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_wheel_installs_and_runs(tmp_path):
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "-w", str(wheels), str(REPO)],
        check=True, capture_output=True,
    )
    wheel = next(wheels.glob("tlzoo-*.whl"))
    target = tmp_path / "venv"
    venv.create(target, with_pip=False)
    site = next((target / "lib").glob("python*/site-packages"))
    # dependencies come from the test venv; tlzoo itself only from the wheel
    deps = [p for p in map(Path, sys.path) if p.name == "site-packages"]
    (site / "deps.pth").write_text("\n".join(map(str, deps)) + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--disable-pip-version-check",
         "--target", str(site), str(wheel)],
        check=True, capture_output=True,
    )
    python = target / "bin" / "python"
    where = subprocess.run([str(python), "-c", "import tlzoo; print(tlzoo.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, check=True)
    assert where.stdout.strip().startswith(str(site))
    version = subprocess.run([str(python), "-m", "tlzoo", "--version"], cwd=tmp_path,
                             capture_output=True, text=True)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == "tlzoo 0.1.0"

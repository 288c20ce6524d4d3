"""The typer application every command module adds itself to, and the registry it reads."""

from __future__ import annotations

import inspect

import typer

from tlzoo.version import __version__

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="tlzoo: transfer learning of image classifiers from one JSON spec.")
list_app = typer.Typer(no_args_is_help=True, help="List backbones, dataset readers, freeze strategies or plugins.")
app.add_typer(list_app, name="list")


def registry():
    from tlzoo.registry import get_registry

    return get_registry()


def _version(value: bool):
    if value:
        typer.echo(f"tlzoo {__version__}")
        raise typer.Exit()


@app.callback()
def root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")):
    """tlzoo: transfer learning of image classifiers from one JSON spec."""


def reflowed(text: str) -> str:
    """A docstring's paragraphs as single lines: typer's rich help keeps each source line break, which a
    terminal narrower than the source lines turns into stray one-word lines. Lists and indented blocks stay."""
    paragraphs = inspect.cleandoc(text).split("\n\n")
    keep = lambda lines: any(line[:1] in ("-", "*", " ", "\b") for line in lines)  # noqa: E731
    return "\n\n".join(p if keep(p.splitlines()) else " ".join(p.splitlines()) for p in paragraphs)


def reflow_help(group: typer.Typer) -> None:
    """Reflow the help of every command of `group` and its sub-groups (once all are registered)."""
    for command in group.registered_commands:
        text = command.help or inspect.getdoc(command.callback)
        if text:
            command.help = reflowed(text)
    for sub in group.registered_groups:
        reflow_help(sub.typer_instance)

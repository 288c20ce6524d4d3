"""The typer application every command module adds itself to, and the registry it reads."""

from __future__ import annotations

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

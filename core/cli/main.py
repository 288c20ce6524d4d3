"""The `tlzoo` command line. User errors print a message and exit 2, never a traceback."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from tlzoo.errors import TlzooError

from tlzoo.cli.app import app, list_app, registry


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    typer.echo(line(headers))
    for row in rows:
        typer.echo(line(row))


@list_app.command("backbones")
def list_backbones(
    pattern: Optional[str] = typer.Argument(None, help="shell-style pattern, e.g. 'timm/resnet*'"),
    pretrained: bool = typer.Option(False, "--pretrained", help="only backbones that have pretrained weights"),
    offline: bool = typer.Option(False, "--offline", help="only backbones whose weights are here (shipped or cached)"),
):
    """List backbones with where their weights come from."""
    from tlzoo.cli.listing import backbone_rows

    rows = backbone_rows(pattern, pretrained=pretrained, offline=offline)
    print_table(["name", "plugin", "weights", "params", "input"], rows)


def _list_components(kind: str) -> None:
    rows = [[c.name, c.plugin, c.description] for c in registry().catalog(kind).list()]
    print_table(["name", "plugin", "description"], rows)


@list_app.command("readers")
def list_readers():
    """List dataset readers."""
    _list_components("readers")


@list_app.command("strategies")
def list_strategies():
    """List freeze strategies."""
    _list_components("strategies")


@list_app.command("plugins")
def list_plugins():
    """List loaded, skipped and failed plugins."""
    rows = [[p.name, p.source, p.status, p.error] for p in registry().plugins]
    print_table(["name", "source", "status", "error"], rows)


@app.command()
def validate(
    spec: Path = typer.Argument(..., help="run spec (JSON)"),
    set_: List[str] = typer.Option([], "--set", help="override a field: --set train.epochs=5"),
):
    """Check a run spec and report every problem at once."""
    from tlzoo.spec import load_spec

    resolved = load_spec(spec, registry(), set_)
    typer.echo(f"{spec}: ok (backbone {resolved.backbone.name}, reader {resolved.reader.name}, "
               f"strategy {resolved.strategy.name})")


@app.command()
def schema():
    """Print the JSON Schema of a run spec, with the options of every installed plugin."""
    from tlzoo.cli.schema import spec_schema

    typer.echo(json.dumps(spec_schema(registry()), indent=2))


from tlzoo.cli import run as _run_commands  # noqa: E402,F401  (adds run, evaluate, predict to `app`)
from tlzoo.cli import cache as _cache_commands  # noqa: E402,F401  (adds cache info, cache clear)


def main(argv: list[str] | None = None) -> None:
    from tlzoo.registry import DuplicateComponent, PluginError, UnknownComponent

    try:
        app(args=argv, standalone_mode=False)
    except (TlzooError, UnknownComponent, DuplicateComponent, PluginError) as exc:
        message = exc.args[0] if isinstance(exc, (UnknownComponent, DuplicateComponent)) else str(exc)
        print(f"tlzoo: error: {message}", file=sys.stderr)
        sys.exit(getattr(exc, "exit_code", 2))
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        print("tlzoo: aborted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        # usage errors from click (which typer may vendor) arrive here in standalone_mode=False
        if callable(getattr(exc, "show", None)) and isinstance(getattr(exc, "exit_code", None), int):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()

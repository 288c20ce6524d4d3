"""The `tlzoo` command line. User errors print a message and exit 2, never a traceback."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from tlzoo.errors import TlzooError

from tlzoo.cli.app import app, list_app, reflow_help, registry


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
    from tlzoo.cli.listing import HEADERS, backbone_rows

    rows = backbone_rows(pattern, pretrained=pretrained, offline=offline)
    if not rows:
        raise no_match(pattern, pretrained, offline)
    print_table(HEADERS, rows)


def no_match(pattern: str | None, pretrained: bool, offline: bool) -> TlzooError:
    """Nothing listed: a user error (exit 2), with the names the pattern probably meant."""
    from tlzoo.cli.listing import backbone_rows

    filters = [flag for flag, on in (("--pretrained", pretrained), ("--offline", offline)) if on]
    what = f"pattern {pattern!r}" if pattern else "the listing"
    message = f"no backbone matches {what}" + (f" with {' '.join(filters)}" if filters else "")
    hint = "patterns are shell-style and match the whole name: 'timm/resnet*', '*resnet18*'"
    if pattern and "/" not in pattern:
        prefixed = [row[0] for row in backbone_rows(f"*/{pattern}", pretrained=pretrained, offline=offline)]
        if prefixed:
            hint = f"names carry their plugin's prefix: {', '.join(prefixed[:5])}"
    return TlzooError(message, hint)


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


@list_app.command("loggers")
def list_loggers():
    """List run loggers."""
    _list_components("loggers")


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
    """Check a run spec and report at once every problem that `run` would refuse before training."""
    from tlzoo.cli.preflight import validate_everything

    notes: list[str] = []
    resolved = validate_everything(spec, registry(), set_, notes)
    for note in notes:
        typer.echo(f"tlzoo: note: {note}", err=True)
    typer.echo(f"{spec}: ok (backbone {resolved.backbone.name}, reader {resolved.reader.name}, "
               f"strategy {resolved.strategy.name})")
    if resolved.strategy.name == "head_only" and resolved.spec.backbone.weights == "none":
        from tlzoo.engine.run import RANDOM_FEATURES_WARNING

        typer.echo(f"tlzoo: {RANDOM_FEATURES_WARNING}", err=True)


@app.command()
def schema():
    """Print the JSON Schema of a run spec, with the options of every installed plugin."""
    from tlzoo.cli.schema import spec_schema

    typer.echo(json.dumps(spec_schema(registry()), indent=2))


from tlzoo.cli import run as _run_commands  # noqa: E402,F401  (adds run, evaluate, predict to `app`)
from tlzoo.cli import cache as _cache_commands  # noqa: E402,F401  (adds cache info, cache clear)
from tlzoo.cli import report as _report_command  # noqa: E402,F401  (adds report to `app`)
from tlzoo.cli import export as _export_command  # noqa: E402,F401  (adds export to `app`)
from tlzoo.cli import rank as _rank_command  # noqa: E402,F401  (adds rank to `app`)
from tlzoo.cli import lr_find as _lr_find_command  # noqa: E402,F401  (adds lr-find to `app`)
from tlzoo.cli import train as _train_command  # noqa: E402,F401  (adds train to `app`)
from tlzoo.cli import inspect_data as _inspect_command  # noqa: E402,F401  (adds inspect to `app`)
from tlzoo.cli import serve as _serve_command  # noqa: E402,F401  (adds serve to `app`)

# `tlzoo --help` lists the way to start first, then a spec's life, then the tools around it
HELP_ORDER = ("train", "run", "predict", "evaluate", "serve", "export", "report", "inspect", "rank", "lr-find",
              "validate", "schema")


def help_rank(command) -> int:
    name = command.name or command.callback.__name__
    return HELP_ORDER.index(name) if name in HELP_ORDER else len(HELP_ORDER)


app.registered_commands.sort(key=help_rank)
reflow_help(app)


def main(argv: list[str] | None = None) -> None:
    from tlzoo.registry import DuplicateComponent, PluginError, UnknownComponent

    try:
        # typer turns Ctrl-C outside a StopRequest (after training: the test split, the report) into exit code
        # 130, which it returns rather than raises when not standalone; returned, it would exit 0 without a word
        code = app(args=argv, standalone_mode=False)
        if isinstance(code, int) and not isinstance(code, bool) and code != 0:
            if code == 130:
                print("tlzoo: error: stopped by Ctrl-C (SIGINT); files written before it are kept", file=sys.stderr)
            sys.exit(code)
        sys.stdout.flush()  # a closed pipe shows here, while BrokenPipeError is still caught below
        from tlzoo.runtime import distributed

        if distributed.launched_worker():
            distributed.leave_worker()
    except BrokenPipeError:
        quiet_broken_pipe()
    except SystemExit:
        # click turns a broken pipe into exit 1 and wraps the streams; a reader that left is no failure
        if type(sys.stdout).__name__.lstrip("_") == "PacifyFlushWrapper":
            quiet_broken_pipe()
        raise
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
        if callable(getattr(exc, "format_message", None)) and isinstance(getattr(exc, "exit_code", None), int):
            usage = exc.ctx.get_usage() if getattr(exc, "ctx", None) is not None else ""
            print((usage + "\n" if usage else "") + f"tlzoo: error: {exc.format_message()}", file=sys.stderr)
            sys.exit(exc.exit_code)
        raise


def quiet_broken_pipe() -> None:
    """`tlzoo list backbones | head -2`: the reader left; exit 0 without a word (as `ls | head` does)."""
    import os

    # point stdout at /dev/null so that the interpreter's final flush cannot fail again
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.__stdout__.fileno())
    except (OSError, ValueError, AttributeError):
        pass  # no real file descriptor (a test's captured stream): nothing will flush to the pipe
    sys.exit(0)


if __name__ == "__main__":
    main()

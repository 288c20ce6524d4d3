"""The hooks a tlzoo plugin can implement. README.md documents each one."""

import pluggy

hookspec = pluggy.HookspecMarker("tlzoo")
hookimpl = pluggy.HookimplMarker("tlzoo")


def names_under(prefix: str):
    """Mark a `register_*` implementation whose names all start with `prefix` (`timm/`), so that looking up
    one name elsewhere need not run it (timm's and torchvision's listings import those libraries: seconds)."""
    def mark(function):
        function.tlzoo_names_under = prefix
        return function

    return mark


@hookspec
def register_backbones(register):
    "Register backbones: call register(Component) once for each."


@hookspec(firstresult=True)
def resolve_backbone(name):
    "Return a Component for a backbone name no plugin registered up front (an open family such as timm/<name>), or None."


@hookspec
def register_dataset_readers(register):
    "Register dataset readers: call register(Component) once for each."


@hookspec
def register_freeze_strategies(register):
    "Register freeze strategies: call register(Component) once for each."


@hookspec
def register_loggers(register):
    "Register run loggers: call register(Component) once for each; build(options, run_dir) returns a RunLogger."

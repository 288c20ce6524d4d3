"""The run spec: pydantic models that name components and hold the protocol's settings.

`models` says what a spec may hold; `reading` reads a spec file and its --set
overrides; `resolve` validates it against the registry's components; `problems`
turns pydantic's errors into located messages. Import from here.
"""

from tlzoo.spec.models import (  # noqa: F401
    ALWAYS_ON_LOGGER, MAX_EPOCHS, MAX_HIDDEN, MAX_LR, MAX_NAME, MAX_SEED, MAX_WORKERS,
    BackboneSpec, BareName, CacheSpec, ComponentRef, DataSpec, DistributedSpec, EarlyStoppingSpec, EmaSpec,
    HeadSpec, MixSpec, OptimizerSpec, ReportSpec, RunSpec, SchedulerSpec, StrictModel, TrainSpec, WeightsFile,
    check_run_name,
)
from tlzoo.spec.problems import blame_overrides, format_loc, problems_from, shorten  # noqa: F401
from tlzoo.spec.reading import MAX_SPEC_BYTES, apply_overrides, load_raw, parse_json, parse_override, read_spec_text  # noqa: F401
from tlzoo.spec.resolve import (  # noqa: F401
    COMPONENT_FIELDS, Resolved, ResolvedComponent, default_name, load_spec, resolve_components, resolve_spec,
    spec_base_dir,
)

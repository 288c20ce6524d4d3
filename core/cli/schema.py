"""JSON Schema of the run spec, with every installed component's own options."""

from __future__ import annotations

import typing

from tlzoo.spec import OptimizerSpec, RunSpec, SchedulerSpec


def component_schema(catalog) -> dict:
    """One branch per options model: {name: enum of the names using it, options: its schema}."""
    by_model: dict[type, list[str]] = {}
    for component in catalog.values():
        by_model.setdefault(component.options, []).append(component.name)
    branches = []
    for model, names in by_model.items():
        branches.append({
            "type": ["object", "string"],
            "if": {"type": "object"},
            "then": {
                "type": "object",
                "properties": {"name": {"enum": sorted(names)}, "options": model.model_json_schema()},
                "required": ["name"],
            },
            "else": {"enum": sorted(names)},
        })
    return {"anyOf": branches}


def spec_schema(registry) -> dict:
    schema = RunSpec.model_json_schema()
    schema["$defs"] = schema.get("$defs", {})
    schema["properties"]["backbone"] = {"allOf": [{"$ref": "#/$defs/BackboneSpec"},
                                                  component_schema(registry.catalog("backbones"))]}
    schema["$defs"]["DataSpec"]["properties"]["reader"] = component_schema(registry.catalog("readers"))
    schema["$defs"]["TrainSpec"]["properties"]["strategy"] = component_schema(registry.catalog("strategies"))
    for field, model in (("optimizer", OptimizerSpec), ("scheduler", SchedulerSpec)):
        # a bare name is shorthand for {"name": ...}
        names = list(typing.get_args(model.model_fields["name"].annotation))
        schema["$defs"]["TrainSpec"]["properties"][field] = {
            "anyOf": [{"$ref": f"#/$defs/{model.__name__}"}, {"enum": names}],
            "default": model.model_fields["name"].default}
    return schema

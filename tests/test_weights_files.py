"""Local weights files that would leave the backbone random or poisoned are refused with the real reason."""

from __future__ import annotations

import pytest
import torch

from tlzoo.errors import WeightsError
from tlzoo.model.build import build_model
from tlzoo.spec import HeadSpec, ResolvedComponent, WeightsFile
from tlzoo.registry import get_registry

from reliability_support import TINY, build_tiny, register_tiny


def tiny_component() -> ResolvedComponent:
    register_tiny()
    component = get_registry().catalog("backbones").get_component(TINY)
    return ResolvedComponent(component, component.options())


def tiny_state() -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in build_tiny(None).model.state_dict().items()}


def save(state, path):
    from safetensors.torch import save_file

    save_file(state, str(path))
    return WeightsFile(path=str(path))


def test_a_file_whose_names_match_nothing_is_refused_naming_expected_and_found_keys(tmp_path):
    weights = save({f"module.{k}": v for k, v in tiny_state().items()}, tmp_path / "prefixed.safetensors")
    with pytest.raises(WeightsError) as caught:
        build_model(tiny_component(), weights, HeadSpec(), 3)
    text = str(caught.value)
    assert "matches 0 of the network's" in text
    assert "Expected names such as stem.0.weight" in text and "the file has module." in text


def test_a_file_matching_under_half_of_the_tensors_is_refused(tmp_path):
    state = tiny_state()
    kept = {k: v for k, v in state.items() if k.startswith("stem.0")}  # one conv weight of many tensors
    with pytest.raises(WeightsError, match="matches 1 of"):
        build_model(tiny_component(), save(kept, tmp_path / "few.safetensors"), HeadSpec(), 3)


def test_a_file_missing_a_few_tensors_still_loads_and_reports_them(tmp_path):
    state = tiny_state()
    del state["body.1.running_var"]
    built = build_model(tiny_component(), save(state, tmp_path / "most.safetensors"), HeadSpec(), 3)
    assert any("body.1.running_var" in line for line in built.report.lines())
    assert torch.equal(built.model.stages[0][0].weight, state["stem.0.weight"])


def test_nan_weights_are_refused_at_load_naming_the_tensor(tmp_path):
    state = tiny_state()
    state["body.0.weight"][0, 0, 0, 0] = float("nan")
    with pytest.raises(WeightsError, match="'body.0.weight' holds NaN") as caught:
        build_model(tiny_component(), save(state, tmp_path / "nan.safetensors"), HeadSpec(), 3)
    assert "lower" not in str(caught.value)


@pytest.mark.parametrize("make, says", [
    (lambda tmp: tmp / "folder.safetensors", "is a directory"),
    (lambda tmp: "/dev/null", "not a regular file"),
])
def test_a_directory_or_device_as_weights_path_says_what_it_is(tmp_path, make, says):
    path = make(tmp_path)
    if path != "/dev/null":
        path.mkdir()
    with pytest.raises(WeightsError, match=says) as caught:
        build_model(tiny_component(), WeightsFile(path=str(path)), HeadSpec(), 3)
    assert "does not exist" not in str(caught.value)

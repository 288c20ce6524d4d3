"""The test helpers themselves (tests/support.py, conftest fixtures): a broken helper fails here, not elsewhere."""

from __future__ import annotations

import json

import torch

from support import RELIABILITY_CNN, TINY_CNN, make_image_folder, write_spec


def test_tiny_model_groups_follow_stages(tiny_model):
    assert tiny_model.num_groups == 4
    assert tiny_model.stage_group_end() == [1, 2, 3]
    assert tiny_model(torch.zeros(2, 3, 32, 32)).shape == (2, 3)


def test_image_folder_helper_writes_every_split(tmp_path):
    root = make_image_folder(tmp_path / "data", classes=2, per_class=3, val_per_class=1)
    assert len(list((root / "train").glob("*/*.png"))) == 6
    assert len(list((root / "val").glob("*/*.png"))) == 2


def test_tiny_backbones_are_fixed_and_leave_the_callers_rng_alone():
    torch.manual_seed(5)
    expected = torch.rand(1)
    torch.manual_seed(5)
    first, second = RELIABILITY_CNN.build(), RELIABILITY_CNN.build()
    assert torch.equal(torch.rand(1), expected)
    assert all(torch.equal(a, b) for a, b in zip(first.model.state_dict().values(),
                                                  second.model.state_dict().values()))
    assert first.model(torch.zeros(1, 3, 16, 16)).shape == (1, 5)


def test_write_spec_sets_dotted_keys_and_updates_sections(tmp_path):
    spec = json.loads(write_spec(tmp_path, tmp_path / "data", train__epochs=4, data={"batch_size": 2}).read_text())
    assert spec["backbone"]["name"] == TINY_CNN.name and spec["train"]["epochs"] == 4
    assert spec["data"]["batch_size"] == 2 and spec["data"]["reader"]["options"]["root"] == str(tmp_path / "data")
    assert spec["report"] == {"enabled": False}
    other = json.loads(write_spec(tmp_path, tmp_path, name="r.json", tiny=RELIABILITY_CNN).read_text())
    assert other["backbone"]["name"] == RELIABILITY_CNN.name and other["cache"] == {"enabled": False}
    assert other["report"] == {"enabled": False}

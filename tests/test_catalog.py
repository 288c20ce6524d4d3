"""Catalogs are plain dicts: globbing, natural sort, duplicates, did-you-mean."""

from __future__ import annotations

import pytest

from tlzoo.registry import Catalog, Component, DuplicateComponent, UnknownComponent, natural_key


def make(name: str, plugin: str = "p") -> Component:
    return Component(name=name, description=f"{name} for tests", build=lambda options: name, plugin=plugin)


@pytest.fixture
def catalog() -> Catalog:
    cat = Catalog("backbone")
    for name in ["torchvision/resnet101", "torchvision/resnet18", "torchvision/resnet50",
                 "timm/resnet50", "torchvision/vgg11", "efficientnet_lite0"]:
        cat.add(make(name))
    return cat


def test_catalog_is_a_plain_dict(catalog):
    assert isinstance(catalog, dict)
    assert catalog["efficientnet_lite0"].name == "efficientnet_lite0"


def test_listing_globs_and_sorts_naturally(catalog):
    names = [c.name for c in catalog.list("torchvision/resnet*")]
    assert names == ["torchvision/resnet18", "torchvision/resnet50", "torchvision/resnet101"]
    assert [c.name for c in catalog.list("*resnet50")] == ["timm/resnet50", "torchvision/resnet50"]
    assert len(catalog.list()) == 6


def test_natural_key_orders_numbers_by_value():
    assert sorted(["b10", "b2", "a1"], key=natural_key) == ["a1", "b2", "b10"]


def test_duplicate_names_both_plugins(catalog):
    with pytest.raises(DuplicateComponent) as info:
        catalog.add(make("torchvision/vgg11", plugin="other"))
    assert "'torchvision/vgg11'" in str(info.value)
    assert "plugin 'p' and by plugin 'other'" in str(info.value)


def test_unknown_name_suggests_close_matches(catalog):
    with pytest.raises(UnknownComponent) as info:
        catalog.get_component("torchvision/resnt50")
    assert str(info.value) == ("Unknown backbone 'torchvision/resnt50'. Did you mean: torchvision/resnet50? "
                               "Run 'tlzoo list backbones'.")


def test_unknown_bare_name_suggests_family_names(catalog):
    with pytest.raises(UnknownComponent) as info:
        catalog.get_component("resnt50")
    message = str(info.value)
    assert message.startswith("Unknown backbone 'resnt50'. Did you mean:")
    assert "torchvision/resnet50" in message and "timm/resnet50" in message


def test_unknown_without_any_close_name_points_at_the_listing():
    cat = Catalog("freeze strategy")
    cat.add(make("head_only"))
    with pytest.raises(UnknownComponent) as info:
        cat.get_component("zzz")
    assert str(info.value) == "Unknown freeze strategy 'zzz'. Run 'tlzoo list strategies'."


def test_resolver_handles_open_families():
    seen = []

    def resolve(name):
        seen.append(name)
        return make(name) if name.startswith("open/") else None

    cat = Catalog("backbone", resolve)
    assert cat.get_component("open/anything").name == "open/anything"
    with pytest.raises(UnknownComponent):
        cat.get_component("closed/thing")
    assert seen == ["open/anything", "closed/thing"]


def test_component_options_forbid_extra_keys():
    from pydantic import ValidationError

    from tlzoo.registry import get_registry

    for kind in ("backbones", "strategies"):
        for component in list(get_registry().catalog(kind).values())[:50]:
            with pytest.raises(ValidationError):
                component.options.model_validate({"surely_not_an_option": 1})


def test_a_name_too_long_to_match_gets_no_did_you_mean_and_is_shown_cut(catalog):
    import time

    start = time.perf_counter()
    with pytest.raises(UnknownComponent) as info:
        catalog.get_component("resnet50" * 10_000)
    message = str(info.value)
    assert time.perf_counter() - start < 1
    assert "Did you mean" not in message and "(80000 characters)" in message and len(message) < 300


def test_listing_nothing_is_an_error_that_suggests_the_prefixed_names(capsys):
    from tlzoo.cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main(["list", "backbones", "resnet18"])
    stderr = capsys.readouterr().err
    assert exit_info.value.code == 2, stderr
    assert "tlzoo: error: no backbone matches pattern 'resnet18'" in stderr
    assert "timm/resnet18" in stderr and "torchvision/resnet18" in stderr


def test_timm_pretrained_tags_are_listed_and_the_table_has_no_empty_params_column():
    from tlzoo.cli.listing import HEADERS, backbone_rows

    names = [row[0] for row in backbone_rows("timm/resnet18.*")]
    assert "timm/resnet18.a1_in1k" in names and "timm/resnet18.tv_in1k" in names
    assert all(name.count(".") == 1 for name in names)
    assert "params" not in HEADERS and all(len(row) == len(HEADERS) for row in backbone_rows("timm/resnet18*"))

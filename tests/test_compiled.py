"""The compiled inference path: same logits as eager fp32, any batch size, clean fallback, wired into runs."""

from __future__ import annotations

import io
import json

import pytest
import torch
from torch import nn

from tlzoo.engine.inference import load_run, predict
from tlzoo.engine.run import run_spec
from tlzoo.runtime.compiled import InferencePath, StagePrefix, StagesAndHead, fast_mode
from tlzoo.spec import load_spec
from tlzoo.registry import get_registry

from support import build_tiny, make_image_folder, split_tiny, write_spec
from tlzoo.model.backbone import ClassifierHead, TransferModel


def tiny_transfer_model() -> TransferModel:
    return TransferModel(split_tiny(build_tiny(None).model), ClassifierHead(16, 3)).eval()


class TupleOut(nn.Module):
    """Returns a string next to its tensor: tracing refuses such outputs."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        return self.conv(x), "tag"


class BranchOnData(nn.Module):
    """Takes a branch chosen by the data: a trace freezes one branch, so the check must catch it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        if bool(x[..., 0].sum() > x[..., -1].sum()):
            return self.conv(x) * 2
        return self.conv(x) - 1


def test_compiled_model_gives_eager_fp32_logits_at_every_batch_size():
    torch.manual_seed(0)
    model = tiny_transfer_model()
    # BatchNorm statistics that are not the identity, so folding them into the convolutions matters
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    logs: list[str] = []
    path = InferencePath(model, "jit", logs.append, "tiny")
    for batch in (5, 8, 3, 1):  # the first batch is traced; later and partial batches reuse the graph
        x = torch.randn(batch, 3, 32, 32)
        with torch.no_grad():
            expected = model(x)
        got = path(x)
        assert path.compiled_ok, logs
        assert got.shape == expected.shape
        assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5), (got - expected).abs().max()
    assert logs == []
    assert not model.training  # left as it was


def test_compiling_leaves_the_module_trainable_and_untouched():
    model = tiny_transfer_model().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    path = InferencePath(model, "jit", lambda line: None)
    path(torch.randn(4, 3, 32, 32))
    assert path.compiled_ok and model.training
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name


@pytest.mark.parametrize("module, reason", [(TupleOut(), "TorchScript compile failed"),
                                            (BranchOnData(), "disagrees with eager")])
def test_untraceable_modules_fall_back_to_eager_and_say_why(module, reason):
    logs: list[str] = []
    x = torch.randn(2, 3, 8, 8)
    x[..., 0] += 5  # the first column outweighs the last: the traced branch differs from the flipped check's
    path = InferencePath(module.eval(), "jit", logs.append, f"odd-{type(module).__name__}")
    got = path(x)
    assert not path.compiled_ok
    assert len(logs) == 1 and reason in logs[0] and f"odd-{type(module).__name__}" in logs[0]
    with torch.no_grad():
        expected = module(x)
    first = got[0] if isinstance(got, tuple) else got
    # eager on channels_last input: equal to NCHW up to float summation order
    assert torch.allclose(first, expected[0] if isinstance(expected, tuple) else expected, atol=1e-5)
    path2 = InferencePath(module, "jit", logs.append, f"odd-{type(module).__name__}")
    path2(x)
    assert len(logs) == 1  # the same fallback is reported once per process, not once per epoch


def test_eager_mode_never_compiles():
    path = InferencePath(tiny_transfer_model(), "eager", lambda line: None)
    path(torch.randn(2, 3, 32, 32))
    assert not path.compiled_ok


def test_prefix_and_tail_modules_split_the_model_exactly():
    model = tiny_transfer_model()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        middle = StagePrefix(model, 2)(x)
        assert torch.equal(middle, model.forward_stages(x, 0, 2))
        assert torch.allclose(StagesAndHead(model, 2)(middle), model(x))
        assert torch.allclose(StagesAndHead(model, 0)(x), model(x))


def test_fast_mode_is_jit_only_for_auto_meaning_fp32_on_cpu():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert fast_mode("auto", "fp32", cpu) == "jit"
    assert fast_mode("fp32", "fp32", cpu) == "eager"  # the exact reference stays eager
    assert fast_mode("auto", "bf16", cpu) == "eager"
    assert fast_mode("auto", "bf16", cuda) == "eager"


def run_tiny(tmp_path, precision: str, **overrides):
    folder = tmp_path / precision
    folder.mkdir()
    settings = dict(train__precision=precision, train__epochs=2,
                    train__strategy={"name": "partial", "options": {"groups": 1}},
                    cache__dir=str(tmp_path / f"cache-{precision}"))
    spec = write_spec(folder, tmp_path / "data", **{**settings, **overrides})
    stream = io.StringIO()
    result = run_spec(load_spec(spec, get_registry()), stream=stream)
    metrics = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    return result, metrics, stream.getvalue()


@pytest.mark.parametrize("native_bf16, expected", [("0", "fp32"), ("1", "bf16")])
def test_auto_precision_follows_the_cpu_probe(monkeypatch, native_bf16, expected):
    from tlzoo.runtime.precision import auto_precision, cpu_has_fast_bf16

    monkeypatch.setenv("TLZOO_CPU_BF16", native_bf16)
    assert cpu_has_fast_bf16() is (native_bf16 == "1")
    assert auto_precision(torch.device("cpu")) == expected


def test_auto_run_on_a_native_bf16_cpu_runs_frozen_passes_in_bf16(tmp_path, tiny_backbone, monkeypatch):
    """The bf16 path (emulated, slowly, on AVX2-only CPUs: kept tiny) on every machine."""
    monkeypatch.setenv("TLZOO_CPU_BF16", "1")
    make_image_folder(tmp_path / "data", classes=3, per_class=4, val_per_class=2)
    result, metrics, log = run_tiny(tmp_path, "auto", train__epochs=1)
    assert "bf16 frozen/eval passes" in log and "TorchScript" not in log
    assert len(metrics) == 1 and 0 <= metrics[0]["val_top1"] <= 1
    run = load_run(result.run_dir, get_registry())
    assert run.fast == "eager" and run.precision == "bf16"
    images = sorted((tmp_path / "data" / "val").rglob("*.png"))
    assert all(p.error is None and len(p.top) == 3 for p in predict(run, images, top_k=3))


def test_auto_run_matches_fp32_run_and_predicts_through_the_compiled_path(tmp_path, tiny_backbone, monkeypatch):
    monkeypatch.setenv("TLZOO_CPU_BF16", "0")  # an AVX2-only CPU, where auto means compiled fp32
    make_image_folder(tmp_path / "data", classes=3, per_class=6)
    results = {precision: run_tiny(tmp_path, precision) for precision in ("fp32", "auto")}
    assert "TorchScript-compiled" in results["auto"][2] and "TorchScript" not in results["fp32"][2]
    for left, right in zip(results["fp32"][1], results["auto"][1], strict=True):
        assert left["val_top1"] == right["val_top1"]
        assert left["val_loss"] == pytest.approx(right["val_loss"], abs=1e-3)
    run = load_run(results["auto"][0].run_dir, get_registry())
    assert run.fast == "jit"
    images = sorted((tmp_path / "data" / "val").rglob("*.png"))
    fast = predict(run, images, top_k=3)
    reference = predict(load_run(results["fp32"][0].run_dir, get_registry()), images, top_k=3)
    assert load_run(results["fp32"][0].run_dir, get_registry()).fast == "eager"
    for a, b in zip(fast, reference, strict=True):
        assert a.error is None and [c for c, _ in a.top] == [c for c, _ in b.top]

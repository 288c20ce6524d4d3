"""The fast inference path: BatchNorm folded into convolutions, same outputs as the module, clean fallback, wired into runs."""

from __future__ import annotations

import io
import json
import re

import pytest
import torch
from torch import nn

from tlzoo.engine.inference import load_run, predict
from tlzoo.engine.run import run_spec
from tlzoo.runtime.fast_pass import InferencePath, Stages, fast_mode
from tlzoo.runtime.folding import conv_bn_pairs, fold_batchnorm
from tlzoo.spec import load_spec
from tlzoo.registry import get_registry

from support import build_tiny, make_image_folder, split_tiny, write_spec
from tlzoo.model.backbone import ClassifierHead, TransferModel

CPU = torch.device("cpu")


def tiny_transfer_model() -> TransferModel:
    torch.manual_seed(0)
    model = TransferModel(split_tiny(build_tiny(None).model), ClassifierHead(16, 3)).eval()
    # BatchNorm statistics that are not the identity, so that folding them changes the weights
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return model


class ConvFeedsTwo(nn.Module):
    """The convolution's output goes to the BatchNorm and to a residual sum: folding would change the sum."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3).eval()
        self.bn.running_mean.fill_(0.7)

    def forward(self, x):
        y = self.conv(x)
        return self.bn(y) + y


class TupleOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        return self.bn(self.conv(x)), "tag"


class NormThenScale(nn.BatchNorm2d):
    """A BatchNorm subclass that does more than normalize, in a way folding cannot know about."""

    def forward(self, x):
        return super().forward(x) * 3


def test_folded_stages_give_the_modules_fp32_outputs_at_every_batch_size():
    model = tiny_transfer_model()
    logs: list[str] = []
    path = InferencePath(Stages(model), "folded", "fp32", CPU, logs.append, "tiny")
    for batch in (5, 8, 3, 1):  # the first batch folds; later and partial batches reuse the folded copy
        x = torch.randn(batch, 3, 32, 32)
        with torch.no_grad():
            expected = model.forward_stages(x)
        got = path(x)
        assert path.folded_count == 3, logs  # every conv_bn block of the tiny net
        assert torch.allclose(got, expected, atol=1e-5, rtol=1e-5), (got - expected).abs().max()
    assert logs == []
    assert not any(isinstance(m, nn.BatchNorm2d) for m in path.folded.modules())
    assert not model.training  # left as it was


def test_folding_leaves_the_module_trainable_untouched_and_shares_what_it_does_not_change():
    model = tiny_transfer_model().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    folded, count = fold_batchnorm(model, torch.randn(2, 3, 32, 32))
    assert count == 3 and model.training
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name
    assert folded.head.fc.weight is model.head.fc.weight  # no copy of what folding leaves alone
    convs = [m for m in folded.modules() if isinstance(m, nn.Conv2d)]
    originals = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.weight is not o.weight and c.bias is not None and o.bias is None for c, o in zip(convs, originals))


def test_timm_norm_and_activation_layers_fold_and_keep_their_activation():
    from timm.layers import BatchNormAct2d

    torch.manual_seed(0)
    module = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), BatchNormAct2d(8, act_layer=nn.ReLU6)).eval()
    module[1].running_mean.uniform_(-1, 1)
    module[1].running_var.uniform_(0.5, 2)
    x = torch.randn(4, 3, 16, 16) * 4  # big enough that ReLU6 clips
    assert conv_bn_pairs(module, x) == [("0", "1")]
    folded, count = fold_batchnorm(module, x)
    assert count == 1 and isinstance(folded[1], nn.Sequential) and isinstance(folded[1][1], nn.ReLU6)
    with torch.no_grad():
        assert torch.allclose(folded(x), module(x), atol=1e-5)
        assert module(x).max() == 6  # the activation is still applied


@pytest.mark.parametrize("module, reason", [(ConvFeedsTwo(), "disagrees with the module"),
                                            (TupleOut(), "does not return a tensor")])
def test_modules_that_fold_wrongly_run_unfolded_and_say_why_once(module, reason):
    logs: list[str] = []
    x = torch.randn(2, 3, 8, 8)
    path = InferencePath(module.eval(), "folded", "fp32", CPU, logs.append, f"odd-{type(module).__name__}")
    got = path(x)
    assert path.folded is None and path.folded_count == 0
    assert len(logs) == 1 and reason in logs[0] and f"odd-{type(module).__name__}" in logs[0]
    with torch.no_grad():
        expected = module(x)
    first = got[0] if isinstance(got, tuple) else got
    # the module on channels_last input: equal to NCHW up to float summation order
    assert torch.allclose(first, expected[0] if isinstance(expected, tuple) else expected, atol=1e-5)
    InferencePath(module, "folded", "fp32", CPU, logs.append, f"odd-{type(module).__name__}")(x)
    assert len(logs) == 1  # the same fallback is reported once per process, not once per epoch


class SharedConv(nn.Module):
    """One convolution called twice, once before a BatchNorm and once on its own."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3).eval()

    def forward(self, x):
        return self.bn(self.conv(x)) + self.conv(x)


def test_a_convolution_called_twice_is_not_folded():
    module = SharedConv()
    folded, count = fold_batchnorm(module, torch.randn(2, 3, 8, 8))
    assert count == 0 and folded is module


def test_a_batchnorm_that_does_more_than_normalize_is_left_alone():
    module = nn.Sequential(nn.Conv2d(3, 4, 3), NormThenScale(4)).eval()
    x = torch.randn(2, 3, 8, 8)
    assert conv_bn_pairs(module, x) == [("0", "1")]
    folded, count = fold_batchnorm(module, x)
    assert count == 0 and folded is module


def test_folding_is_checked_in_fp32_and_runs_in_the_passes_precision():
    model = tiny_transfer_model()
    x = torch.randn(4, 3, 32, 32)
    path = InferencePath(Stages(model), "folded", "bf16", CPU, lambda line: None)
    got = path(x)
    assert path.folded_count == 3 and got.dtype == torch.bfloat16
    with torch.no_grad():
        expected = model.forward_stages(x)
    assert torch.allclose(got.float(), expected, atol=0.1, rtol=0.05)


def test_eager_mode_never_folds():
    path = InferencePath(tiny_transfer_model(), "eager", "fp32", CPU, lambda line: None)
    path(torch.randn(2, 3, 32, 32))
    assert path.folded is None and path.folded_count == 0


def test_stages_split_the_model_exactly():
    model = tiny_transfer_model()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        middle = Stages(model, 0, 2)(x)
        assert torch.equal(middle, model.forward_stages(x, 0, 2))
        assert torch.allclose(model.head(Stages(model, 2)(middle)), model(x))
        assert torch.allclose(model.head(Stages(model)(x)), model(x))


def test_fast_mode_is_folded_for_auto_on_cpu_only():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert fast_mode("auto", "fp32", cpu) == "folded"
    assert fast_mode("auto", "bf16", cpu) == "folded"
    assert fast_mode("fp32", "fp32", cpu) == "eager"  # the exact reference runs the module itself
    assert fast_mode("bf16", "bf16", cpu) == "eager"
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
    assert "bf16 frozen/eval passes (BatchNorm folded, channels_last)" in log
    assert len(metrics) == 1 and 0 <= metrics[0]["val_top1"] <= 1
    run = load_run(result.run_dir, get_registry())
    assert run.fast == "folded" and run.precision == "bf16"
    images = sorted((tmp_path / "data" / "val").rglob("*.png"))
    assert all(p.error is None and len(p.top) == 3 for p in predict(run, images, top_k=3))


def test_auto_run_matches_fp32_run_and_predicts_through_the_folded_path(tmp_path, tiny_backbone, monkeypatch):
    monkeypatch.setenv("TLZOO_CPU_BF16", "0")  # an AVX2-only CPU, where auto means folded fp32
    make_image_folder(tmp_path / "data", classes=3, per_class=6)
    results = {precision: run_tiny(tmp_path, precision) for precision in ("fp32", "auto")}
    assert "(BatchNorm folded, channels_last)" in results["auto"][2] and "folded" not in results["fp32"][2]
    for left, right in zip(results["fp32"][1], results["auto"][1], strict=True):
        assert left["val_top1"] == right["val_top1"]
        assert left["val_loss"] == pytest.approx(right["val_loss"], abs=1e-3)
    run = load_run(results["auto"][0].run_dir, get_registry())
    assert run.fast == "folded"
    images = sorted((tmp_path / "data" / "val").rglob("*.png"))
    fast = predict(run, images, top_k=3)
    reference = predict(load_run(results["fp32"][0].run_dir, get_registry()), images, top_k=3)
    assert load_run(results["fp32"][0].run_dir, get_registry()).fast == "eager"
    for a, b in zip(fast, reference, strict=True):
        assert a.error is None and [c for c, _ in a.top] == [c for c, _ in b.top]


def test_a_head_only_cache_pass_runs_folded_and_says_so(tmp_path, tiny_backbone, monkeypatch):
    monkeypatch.setenv("TLZOO_CPU_BF16", "0")
    make_image_folder(tmp_path / "data", classes=3, per_class=6)
    _, metrics, log = run_tiny(tmp_path, "auto", train__strategy="head_only")
    assert re.search(r"cache: stage-3 activations of 18 train images x 1 view\(s\) computed in [\d.]+s "
                     r"\(3 BatchNorm layers folded in [\d.]+s\)", log), log
    # the val build reuses the train build's folded copy, so it folds nothing again
    assert re.search(r"cache: stage-3 activations of 9 val images x 1 view\(s\) computed in [\d.]+s\n", log), log
    assert len(metrics) == 2
    assert "runs unfolded" not in log  # validation on cached activations has nothing to fold, and says nothing


def test_threads_predicting_on_one_loaded_model_agree_exactly_with_one_caller(tmp_path, tiny_backbone, monkeypatch):
    """Each predict folds its own copy; tracing which BatchNorm follows which convolution used to hook the
    shared model, so a second thread's pass fired the first one's hooks and folded a different copy."""
    import threading

    import tlzoo

    monkeypatch.setenv("TLZOO_CPU_BF16", "0")  # auto = folded fp32 on every CPU
    make_image_folder(tmp_path / "data", classes=3, per_class=4, val_per_class=4)
    result, _, _ = run_tiny(tmp_path, "auto", train__epochs=1)
    model = tlzoo.load(result.run_dir)
    images = sorted((tmp_path / "data" / "val").rglob("*.png"))
    expected = [p.top for p in model.predict(images, top_k=3)]
    for _ in range(3):
        start, got = threading.Barrier(4), {}

        def predict_in_thread(slot):
            start.wait()
            got[slot] = [p.top for p in model.predict(images, top_k=3)]

        threads = [threading.Thread(target=predict_in_thread, args=(slot,)) for slot in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert [got[slot] for slot in range(4)] == [expected] * 4

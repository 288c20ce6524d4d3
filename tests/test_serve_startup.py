"""`tlzoo serve` before and around the HTTP layer: loading, warm-up, the extra, and the batcher itself.

In this process (no server subprocess): a model that cannot load or fails its
warm-up batch is a `tlzoo: error:`, a missing extra names what to install, and
the batcher waits for requests on their way (and only then) and survives a
failing pass.
"""

from __future__ import annotations

import time

import pytest

from reliability_support import cli_output


def test_a_model_that_cannot_load_is_an_error_before_any_port_opens(tmp_path, capsys):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    for model in (tmp_path / "no-such-run", broken):
        code, _, err = cli_output(capsys, "serve", str(model), "--port", "0")
        assert code == 2, err
        assert err.startswith("tlzoo: error: ") and "listening" not in err and "Traceback" not in err


def test_without_the_serve_extra_the_command_says_what_to_install(monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a))
    code, _, err = cli_output(capsys, "serve", "any-model")
    assert code == 2 and "needs uvicorn" in err and "pip install 'tlzoo[serve]'" in err


def test_a_model_that_fails_its_warm_up_batch_stops_the_server_with_an_error(monkeypatch, capsys):
    import tlzoo.serve.server as server_module
    from tlzoo.serve.served import Served

    class Broken:
        classes, background = ["a", "b"], (255, 255, 255)

        def prepare(self, image):
            return image

        def score(self, rows, top_ks):
            raise RuntimeError("no kernel for this input")

    monkeypatch.setattr(server_module, "load_served", lambda *args, **kwargs: Served(Broken(), {}, (8, 8)))
    code, _, err = cli_output(capsys, "serve", "model.onnx", "--port", "0")
    assert code == 2, err
    assert "listening on" in err and "serving" not in err
    assert "tlzoo: error: model.onnx: the model failed its warm-up batch: RuntimeError: no kernel for this input" in err


class RecordingPredictor:
    """A stand-in model for the batcher's own tests: records the batches it is given."""

    def __init__(self):
        self.batches = []

    def score(self, rows, top_ks):
        self.batches.append(list(rows))
        if "boom" in rows:
            raise RuntimeError("the model failed")
        return [f"answer {row}" for row in rows]


def test_the_batcher_waits_for_requests_on_their_way_and_not_otherwise():
    import asyncio

    from tlzoo.serve.batcher import Batcher
    from tlzoo.serve.metrics import Metrics

    model = RecordingPredictor()
    batcher = Batcher(model, max_batch=4, max_wait=5.0, metrics=Metrics(4), log=lambda line: None)
    batcher.start("warm")
    assert batcher.ready.wait(10) and batcher.failed is None

    async def scenario():
        started = time.monotonic()
        alone = await batcher.results(batcher.submit([1], 5))  # nothing else arriving: no 5 s wait
        alone_took = time.monotonic() - started
        with batcher.arrival():  # a second request is being read: the first waits for it
            first = batcher.submit([2], 5)
            await asyncio.sleep(0.3)
            second = batcher.submit([3], 5)
        first, second = await batcher.results(first), await batcher.results(second)
        with pytest.raises(RuntimeError, match="the model failed"):
            await batcher.results(batcher.submit(["boom"], 5))
        after = await batcher.results(batcher.submit([4], 5))  # the batch thread lives on
        return alone, alone_took, first, second, after

    alone, alone_took, first, second, after = asyncio.run(scenario())
    batcher.stop()
    assert alone == ["answer 1"] and alone_took < 2.5
    assert first == ["answer 2"] and second == ["answer 3"] and after == ["answer 4"]
    assert model.batches == [["warm"], [1], [2, 3], ["boom"], [4]]

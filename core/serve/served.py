"""The model a server answers with: a run directory's or an exported file's predict path, and what /info says.

Loading goes through the same functions as `tlzoo predict` (tlzoo.engine.inference.load_run,
tlzoo.export.predicting.load_exported), so a model that cannot be loaded is the same
`tlzoo: error:`, raised before any port opens. An upload is decoded by rgb_from_bytes
(load_rgb for bytes: its caps, checks and reduced decoding to the predictor's `need`)
and prepared by the predictor's own `prepare`, as `tlzoo predict` treats a file.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import metadata as distributions
from pathlib import Path

from tlzoo.data.images import BadImage, rgb_from_bytes
from tlzoo.engine.inference import RunPredictor, load_run
from tlzoo.export.metadata import preprocessing_of
from tlzoo.export.predicting import is_exported_file, load_exported
from tlzoo.serve.uploads import BadInput, Upload


@dataclass
class Served:
    predictor: object  # RunPredictor or ExportedModel: classes, background, need, prepare(image), score(...)
    info: dict
    input_size: tuple[int, int]  # (height, width) of the model's input


def load_served(path: Path, registry, which: str = "best", log=None) -> Served:
    path = Path(path)
    if is_exported_file(path):
        model = load_exported(path)
        meta = model.metadata
        height, width = meta["preprocessing"]["center_crop"]
        info = {"model": str(path), "kind": f"exported {path.suffix.lower()[1:]} ({meta['exporter']})",
                "classes": model.classes, "backbone": meta["backbone"], "input": meta["input"],
                "preprocessing": meta["preprocessing"], "precision": "fp32 (as exported)",
                "spec_hash": meta["spec_hash"], "exported_with": {"tlzoo": meta["tlzoo_version"],
                                                                  "torch": meta.get("torch_version")}}
        return Served(model, info, (int(height), int(width)))
    run = load_run(path, registry, which)
    predictor = RunPredictor(run, log)
    config = run.data_config
    info = {"model": str(path), "kind": f"run directory ({which}.safetensors, epoch {run.sidecar.get('epoch')})",
            "classes": run.classes, "backbone": run.sidecar["backbone"], "head": run.sidecar["head"],
            "input": {"dtype": "float32", "layout": "nchw", "shape": [None, *config.input_size]},
            "preprocessing": preprocessing_of(config, run.background, inside=False),
            "precision": f"{run.precision} ({run.fast} path)", "spec_hash": run.sidecar.get("spec_hash"),
            "trained_with": run.sidecar.get("versions", {})}
    return Served(predictor, info, tuple(config.input_size[1:]))


def serving_versions() -> dict:
    """Versions of what answers the requests (the model's own are in its metadata)."""
    found = {}
    for name in ("tlzoo", "torch", "torchvision", "onnxruntime", "fastapi", "uvicorn", "pillow"):
        try:
            found[name] = distributions.version(name)
        except distributions.PackageNotFoundError:
            continue
    return found


def prepare_upload(served: Served, upload: Upload):
    """Decode and prepare one upload exactly as `tlzoo predict` does a file; 422 naming it when it is bad."""
    try:
        image = rgb_from_bytes(upload.data, upload.name, served.predictor.background, served.predictor.need)
    except BadImage as exc:
        raise BadInput(422, f"{upload.name}: {exc.reason}") from None
    return served.predictor.prepare(image)


def warm_up_row(served: Served):
    """A grey image at the input size, prepared: the warm-up batch's one image."""
    from PIL import Image

    height, width = served.input_size
    return served.predictor.prepare(Image.new("RGB", (width, height), (128, 128, 128)))

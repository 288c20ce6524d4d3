"""Loading images in threads leaves the process's warning state alone (issue 20, item 2).

load_rgb once turned decoder warnings into errors with warnings.catch_warnings,
which swaps process-wide state: threads of the scan restored each other's
copies and left `simplefilter("error")` behind, so a user's own warnings raised
and a run whose class names need glyphs matplotlib lacks ended without a report.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from PIL import Image

from tlzoo.data.images import load_rgb
from tlzoo.data.scan import scan_images

from support import run_tiny


def noisy_pngs(folder, count: int) -> list:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for number in range(count):
        path = folder / f"{number}.png"
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def test_scanning_in_threads_leaves_the_warning_filters_and_a_users_warnings_alone(tmp_path):
    paths = noisy_pngs(tmp_path, 400)
    before = list(warnings.filters)
    for _ in range(3):
        results = scan_images(paths, workers=8)
        assert all(result.problem is None for result in results.values())
        assert warnings.filters == before
    with pytest.warns(UserWarning, match="still a warning"):
        warnings.warn("still a warning", UserWarning)


def test_a_decoder_warning_reaches_the_user_and_does_not_make_the_file_bad(tmp_path, monkeypatch):
    """Pillow warns about metadata it skips (EXIF tags, a broken APNG); the pixels are fine."""
    path = noisy_pngs(tmp_path, 1)[0]
    real_load = Image.Image.load

    def warning_load(self):
        warnings.warn("Possibly corrupt EXIF data", UserWarning)
        return real_load(self)

    monkeypatch.setattr(Image.Image, "load", warning_load)
    with pytest.warns(UserWarning, match="corrupt EXIF"):
        assert load_rgb(path).size == (24, 24)


def test_a_run_with_cjk_class_names_ends_with_its_report(tmp_path, tiny_backbone):
    rng = np.random.default_rng(1)
    names = ["玫瑰", "向日葵", "郁金香"]  # glyphs matplotlib's default font lacks: it warns for each
    for split, count in (("train", 12), ("val", 4)):
        for index, name in enumerate(names):
            folder = tmp_path / "data" / split / name
            folder.mkdir(parents=True)
            for number in range(count):
                colour = np.array([(220, 40, 40), (40, 200, 60), (50, 70, 230)][index], dtype=float)
                pixels = np.clip(colour + rng.normal(0, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{number}.png")
    result, metrics, _ = run_tiny(tmp_path, "cjk", train__epochs=1, report={"enabled": True},
                                  data={"batch_size": 8, "num_workers": 0, "augment": "none"})
    assert (result.run_dir / "report.html").stat().st_size > 0
    summary = json.loads((result.run_dir / "summary.json").read_text(encoding="utf-8"))
    assert set(summary["per_class_accuracy"]) == set(names)

"""Held-out data sets from real images of other sources than flowers12, for auto_train_bench.py.

- faces: scikit-image's subset of Labeled Faces in the Wild (`skimage.data.lfw_subset`): 100 grey 25 x 25
  photographs of faces and 100 of other things, two classes; tiny, grey, and a binary task.
- digits: scikit-learn's handwritten digits (`sklearn.datasets.load_digits`, 1,797 scans of 8 x 8 pixels in
  17 grey levels), ten classes; scikit-learn is not one of tlzoo's dependencies: `pip install scikit-learn`.

Both are written at their own size as PNG (lossless; tlzoo resizes them, as it would a user's small images)
into train/ val/ test/ class folders, each class shuffled with the set's seed before it is split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_shuffled(root: Path, by_class: dict[str, np.ndarray], seed: int, train: int, val: int, test: int) -> None:
    """`by_class`: class name -> grey images (n, h, w) in 0-255; the first train/val/test of a shuffle each."""
    rng = np.random.default_rng(seed)
    for name, images in by_class.items():
        order = rng.permutation(len(images))
        if train + val + test > len(order):
            raise ValueError(f"class {name} has {len(order)} images, fewer than {train + val + test}")
        bounds = {"train": order[:train], "val": order[train:train + val], "test": order[train + val:train + val + test]}
        for split, indices in bounds.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for index in indices:
                pixels = np.clip(np.rint(images[index]), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).convert("RGB").save(folder / f"{int(index):04d}.png")


def faces(root: Path, seed: int, train: int, val: int, test: int) -> None:
    import skimage.data

    images = skimage.data.lfw_subset() * 255  # the first 100 are faces, the other 100 are not
    write_shuffled(root, {"face": images[:100], "other": images[100:]}, seed, train, val, test)


def digits(root: Path, seed: int, train: int, val: int, test: int) -> None:
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise SystemExit("the digits sets need scikit-learn: pip install scikit-learn") from exc
    data = load_digits()
    images = data.images * (255 / 16)
    write_shuffled(root, {str(label): images[data.target == label] for label in range(10)}, seed, train, val, test)

"""A larger ImageFolder tree made from flowers12's training images, for the scaling benchmark.

Each source image yields up to 14 variants (flips, quarter turns, centre and
corner crops resized back), saved as JPEG, so 720 images become up to 10,080
distinct files in the same 12 classes. `subset` links the first n per class
into another tree without copying.
"""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image, ImageOps

SIZE = 224


def variants(image: Image.Image) -> list[Image.Image]:
    turns = [image.rotate(angle, expand=True) for angle in (90, 180, 270)]
    flips = [ImageOps.mirror(image), ImageOps.flip(image), ImageOps.mirror(turns[0]), ImageOps.flip(turns[0])]
    w, h = image.size
    crops = []
    for fraction in (0.8, 0.65):
        cw, ch = int(w * fraction), int(h * fraction)
        for left, top in (((w - cw) // 2, (h - ch) // 2), (0, 0), (w - cw, h - ch)):
            crops.append(image.crop((left, top, left + cw, top + ch)).resize((SIZE, SIZE), Image.BICUBIC))
    return [image, *turns, *flips, *crops][:14]


def generate(source: Path, target: Path, count: int) -> int:
    """Write about `count` images (balanced over classes) under target/CLASS/; returns how many."""
    classes = sorted(p.name for p in source.iterdir() if p.is_dir())
    per_class = -(-count // len(classes))
    written = 0
    for name in classes:
        folder = target / name
        folder.mkdir(parents=True, exist_ok=True)
        made = 0
        for path in sorted((source / name).iterdir()):
            if made >= per_class or written >= count:
                break
            with Image.open(path) as opened:
                image = opened.convert("RGB")
            for index, variant in enumerate(variants(image)):
                if made >= per_class or written >= count:
                    break
                variant.save(folder / f"{path.stem}_v{index:02d}.jpg", quality=90)
                made += 1
                written += 1
    return written


def subset(source: Path, target: Path, count: int) -> int:
    """Hard-link about `count` images (balanced over classes) of `source` into `target`."""
    classes = sorted(p.name for p in source.iterdir() if p.is_dir())
    per_class, linked = count // len(classes), 0
    for name in classes:
        (target / name).mkdir(parents=True, exist_ok=True)
        for path in sorted((source / name).iterdir())[:per_class]:
            os.link(path, target / name / path.name)
            linked += 1
    return linked

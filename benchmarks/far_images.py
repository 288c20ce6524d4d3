"""Far unknowns for trust_bench.py: seeded images of kinds no photograph of the known classes looks like (noise,
gradients, stripes and checkerboards, shapes, rendered documents and screenshots, skimage.data photographs)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SIDE = 224

WORDS = ("invoice total amount due date account payment order number customer address report quarterly "
         "revenue summary table figure section page settings file edit view help window button cancel ok").split()


def far_images(target: Path, count: int, seed: int = 0) -> list[Path]:
    """`count` images of kinds no flower photograph looks like, seeded."""
    rng = np.random.default_rng(seed)
    shuffle = random.Random(seed)
    target.mkdir(parents=True, exist_ok=True)
    makers = [noise, gradient, stripes, shapes, document, screenshot, photograph]
    paths = []
    for index in range(count):
        maker = makers[index % len(makers)]
        image = maker(rng, shuffle, index)
        path = target / f"{maker.__name__}-{index:04d}.png"
        image.convert("RGB").resize((SIDE, SIDE)).save(path)
        paths.append(path)
    return paths


def noise(rng, shuffle, index):
    if index % 2:
        return Image.fromarray(rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8))
    base = rng.integers(0, 256, 3)
    return Image.fromarray(np.clip(base + rng.normal(0, 30, (SIDE, SIDE, 3)), 0, 255).astype(np.uint8))


def gradient(rng, shuffle, index):
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0, 1, SIDE)[:, None] if index % 2 else np.linspace(0, 1, SIDE)[None, :]
    t = np.broadcast_to(t, (SIDE, SIDE))[..., None]
    return Image.fromarray((a * (1 - t) + b * t).astype(np.uint8))


def stripes(rng, shuffle, index):
    period = int(rng.integers(4, 40))
    y, x = np.indices((SIDE, SIDE))
    pattern = ((x // period + (y // period if index % 2 else 0)) % 2).astype(np.float64)[..., None]
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    return Image.fromarray((a * pattern + b * (1 - pattern)).astype(np.uint8))


def shapes(rng, shuffle, index):
    image = Image.new("RGB", (SIDE, SIDE), tuple(int(v) for v in rng.integers(0, 256, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(3, 12))):
        box = sorted(rng.integers(0, SIDE, 2).tolist()) + sorted(rng.integers(0, SIDE, 2).tolist())
        box = [box[0], box[2], box[1] + 2, box[3] + 2]
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        shuffle.choice([draw.rectangle, draw.ellipse])(box, fill=colour)
    return image


def _text_lines(shuffle, count: int, words: int) -> list[str]:
    return [" ".join(shuffle.choice(WORDS) for _ in range(words)) for _ in range(count)]


def document(rng, shuffle, index):
    image = Image.new("RGB", (SIDE * 2, SIDE * 2), (250, 250, 248))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    y = 20
    for line in _text_lines(shuffle, 30, 6):
        draw.text((20, y), line, fill=(20, 20, 20), font=font)
        y += 14
    return image


def screenshot(rng, shuffle, index):
    image = Image.new("RGB", (SIDE * 2, SIDE * 2), (236, 236, 240))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    draw.rectangle([0, 0, SIDE * 2, 28], fill=tuple(int(v) for v in rng.integers(40, 120, 3)))
    draw.text((10, 8), " ".join(shuffle.choice(WORDS) for _ in range(3)), fill=(255, 255, 255), font=font)
    for row in range(6):
        top = 40 + row * 60
        draw.rectangle([16, top, SIDE * 2 - 16, top + 48], outline=(160, 160, 170), fill=(255, 255, 255))
        draw.text((26, top + 8), " ".join(shuffle.choice(WORDS) for _ in range(5)), fill=(30, 30, 30), font=font)
        draw.rectangle([SIDE * 2 - 110, top + 12, SIDE * 2 - 30, top + 36], fill=(60, 110, 200))
    return image


def photograph(rng, shuffle, index):
    """A crop of one of skimage's bundled photographs (people, a cat, a rocket, coffee, coins, ...)."""
    from skimage import data

    names = ["astronaut", "camera", "coffee", "chelsea", "rocket", "coins", "moon", "page", "text", "brick",
             "grass", "gravel", "hubble_deep_field", "immunohistochemistry", "retina", "cell", "clock"]
    for _ in range(len(names)):
        try:
            pixels = getattr(data, names[index // 7 % len(names)])()
            break
        except Exception:  # noqa: BLE001 - a few of skimage's images need a download: take the next one
            index += 7
    else:
        return noise(rng, shuffle, index)
    pixels = np.asarray(pixels)
    if pixels.ndim == 2:
        pixels = np.stack([pixels] * 3, -1)
    pixels = pixels[..., :3]
    if pixels.dtype != np.uint8:
        pixels = (255 * (pixels - pixels.min()) / max(1e-9, float(np.ptp(pixels)))).astype(np.uint8)
    height, width = pixels.shape[:2]
    side = int(min(height, width) * rng.uniform(0.4, 1.0))
    top, left = int(rng.integers(0, height - side + 1)), int(rng.integers(0, width - side + 1))
    return Image.fromarray(pixels[top:top + side, left:left + side])

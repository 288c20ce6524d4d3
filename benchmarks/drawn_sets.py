"""Held-out data sets drawn here, of domains far from flowers12, for auto_train_bench.py.

- glyphs: which capital letter (ten classes), rendered in one of this machine's DejaVu fonts (sans, serif,
  mono; bold, oblique, condensed), rotated up to 30 degrees, at 35-80 % of the side, in a colour against a
  gradient with noise, a few stray strokes; 128 px JPEGs (quality 80). Printed characters: ImageNet has
  no such classes, and the fonts differ more within a class than the letters between some classes.
- shapes: which shape (eight classes: circle, square, triangle, pentagon, hexagon, star, cross, arrow), filled
  or drawn as a thick outline, rotated, on a crop of one of skimage's photographs or a flat colour, with small
  blobs around it; 256 x 192 px (not square), as product or icon photos are.

Each maker writes train/ val/ test/ class folders; `train` is the training images a class, or one count per
class (an imbalanced set).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

FONTS = Path("/usr/share/fonts/truetype/dejavu")
LETTERS = "ABDEGHKMRS"
SHAPES = ("circle", "square", "triangle", "pentagon", "hexagon", "star", "cross", "arrow")
BACKGROUNDS = ("astronaut", "camera", "coffee", "chelsea", "rocket", "coins", "page", "brick", "grass", "gravel")


def write_drawn(root: Path, classes, seed: int, train, val: int, test: int, draw) -> None:
    """`draw(rng, name)` makes one image of class `name`; every class gets its train, val and test images."""
    rng = np.random.default_rng(seed)
    counts = train if isinstance(train, (list, tuple)) else [train] * len(classes)
    for name, count in zip(classes, counts):
        for split, number in (("train", count), ("val", val), ("test", test)):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(number):
                draw(rng, name).convert("RGB").save(folder / f"{index:04d}.jpg", quality=80)


def colour(rng, far_from=None) -> tuple[int, int, int]:
    """A random colour; with `far_from`, one whose brightness differs from it by at least 80 (legible)."""
    while True:
        value = tuple(int(v) for v in rng.integers(0, 256, 3))
        if far_from is None or abs(sum(value) - sum(far_from)) >= 240:
            return value


def gradient_background(rng, width: int, height: int) -> tuple[Image.Image, tuple[int, int, int]]:
    start, end = np.array(colour(rng)), np.array(colour(rng))
    t = np.linspace(0, 1, width if rng.random() < 0.5 else height)
    t = t[None, :] if len(t) == width else t[:, None]
    t = np.broadcast_to(t, (height, width))[..., None]
    pixels = start * (1 - t) + end * t + rng.normal(0, 12, (height, width, 3))
    mean = tuple(int(v) for v in (start + end) / 2)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), mean


@functools.cache
def fonts() -> tuple[Path, ...]:
    found = tuple(sorted(path for path in FONTS.glob("*.ttf")
                         if "Math" not in path.name and "ExtraLight" not in path.name))
    if not found:
        raise SystemExit(f"no DejaVu fonts in {FONTS} (Debian's fonts-dejavu-core): glyphs cannot be drawn")
    return found


def glyph(rng, letter: str, side: int = 128) -> Image.Image:
    big = side * 2  # drawn at twice the side and shrunk: smoother edges, as a photographed print
    image, mean = gradient_background(rng, big, big)
    ink = colour(rng, far_from=mean)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(0, 4))):  # stray strokes
        points = [tuple(int(v) for v in rng.integers(0, big, 2)) for _ in range(2)]
        draw.line(points, fill=colour(rng), width=int(rng.integers(1, 5)))
    font_file = fonts()[int(rng.integers(0, len(fonts())))]  # a different face, weight or slant each time
    font = ImageFont.truetype(str(font_file), int(big * rng.uniform(0.35, 0.8)))
    layer = Image.new("L", (big, big), 0)
    ImageDraw.Draw(layer).text((big / 2, big / 2), letter, fill=255, font=font, anchor="mm")
    layer = layer.rotate(float(rng.uniform(-30, 30)), resample=Image.BICUBIC,
                         translate=tuple(int(v) for v in rng.integers(-big // 8, big // 8 + 1, 2)))
    image.paste(Image.new("RGB", (big, big), ink), (0, 0), layer)
    return image.resize((side, side), Image.BICUBIC)


def photo_background(rng, width: int, height: int) -> Image.Image:
    from skimage import data

    pixels = np.asarray(getattr(data, BACKGROUNDS[int(rng.integers(0, len(BACKGROUNDS)))])())
    if pixels.ndim == 2:
        pixels = np.stack([pixels] * 3, -1)
    pixels = pixels[..., :3].astype(np.uint8)
    rows, cols = pixels.shape[:2]
    scale = rng.uniform(0.3, 0.9)
    crop_w, crop_h = int(cols * scale), int(cols * scale * height / width)
    crop_h = min(crop_h, rows)
    top, left = int(rng.integers(0, rows - crop_h + 1)), int(rng.integers(0, cols - crop_w + 1))
    crop = Image.fromarray(pixels[top:top + crop_h, left:left + crop_w])
    return crop.resize((width, height), Image.BICUBIC).filter(ImageFilter.GaussianBlur(float(rng.uniform(0, 2))))


def outline(name: str, radius: float) -> list[tuple[float, float]]:
    """The shape's corners around (0, 0), unrotated; a circle is a 48-gon."""
    def ring(count: int, inner: float = 1.0) -> list[tuple[float, float]]:
        points = []
        for index in range(count * (2 if inner != 1.0 else 1)):
            r = radius * (inner if index % 2 else 1.0)
            angle = -math.pi / 2 + index * math.pi * 2 / (count * (2 if inner != 1.0 else 1))
            points.append((r * math.cos(angle), r * math.sin(angle)))
        return points

    arm, unit = radius * 0.35, radius
    return {
        "circle": lambda: ring(48),
        "square": lambda: [(-unit * 0.75, -unit * 0.75), (unit * 0.75, -unit * 0.75), (unit * 0.75, unit * 0.75),
                           (-unit * 0.75, unit * 0.75)],
        "triangle": lambda: ring(3),
        "pentagon": lambda: ring(5),
        "hexagon": lambda: ring(6),
        "star": lambda: ring(5, inner=0.42),
        "cross": lambda: [(-arm, -unit), (arm, -unit), (arm, -arm), (unit, -arm), (unit, arm), (arm, arm), (arm, unit),
                          (-arm, unit), (-arm, arm), (-unit, arm), (-unit, -arm), (-arm, -arm)],
        "arrow": lambda: [(-unit, -arm), (0, -arm), (0, -unit), (unit, 0), (0, unit), (0, arm), (-unit, arm)],
    }[name]()


def shape(rng, name: str, width: int = 256, height: int = 192) -> Image.Image:
    if rng.random() < 0.7:
        image = photo_background(rng, width, height)
    else:
        image = Image.new("RGB", (width, height), colour(rng))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(0, 6))):  # small blobs: clutter, never the size of the shape
        x, y, r = int(rng.integers(0, width)), int(rng.integers(0, height)), int(rng.integers(3, 12))
        draw.ellipse([x - r, y - r, x + r, y + r], fill=colour(rng))
    radius = min(width, height) * rng.uniform(0.2, 0.42)
    turn = rng.uniform(0, 2 * math.pi)
    cx = rng.uniform(radius, width - radius)
    cy = rng.uniform(radius, height - radius)
    points = [(cx + x * math.cos(turn) - y * math.sin(turn), cy + x * math.sin(turn) + y * math.cos(turn))
              for x, y in outline(name, radius)]
    paint = colour(rng)
    if rng.random() < 0.6:
        draw.polygon(points, fill=paint, outline=colour(rng))
    else:
        draw.line(points + points[:1], fill=paint, width=int(rng.integers(4, 10)), joint="curve")
    return image


def glyphs(root: Path, seed: int, train, val: int, test: int) -> None:
    write_drawn(root, list(LETTERS), seed, train, val, test, glyph)


def shapes(root: Path, seed: int, train, val: int, test: int) -> None:
    write_drawn(root, list(SHAPES), seed, train, val, test, shape)

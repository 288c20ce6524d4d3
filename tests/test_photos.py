"""Large photos are decoded no larger than the transform needs (tlzoo.data.decode_size), everywhere.

JPEGs through libjpeg's DCT scaling (Pillow's draft), other formats through
Image.reduce; the result stays within a few levels of the full decode, and the
scan, decoding at the smallest scale, still finds every damaged file a full
decode finds.
"""

from __future__ import annotations

import io
import math
import random

import numpy as np
import pytest
from PIL import Image

from tlzoo.data.dataset import ImageDataset
from tlzoo.data.decode_size import CropArea, FixedSize, LongerSide, ShorterSide, reduced_size, reduction
from tlzoo.data.images import BadImage, decode_rgb, load_rgb
from tlzoo.data.phash import HASH_NEED
from tlzoo.data.scan import check_image
from tlzoo.data.transforms import build_eval_transform, build_train_transform
from tlzoo.model.backbone import DataConfig

CONFIG = DataConfig(input_size=(3, 64, 64), crop_pct=0.875, interpolation="bicubic")  # resize to 73, crop 64


def photo(size=(1024, 768), seed=0) -> Image.Image:
    """A smooth picture with some texture, like an upscaled photo."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)


def save(image: Image.Image, path, **options):
    image.save(path, **options)
    return path


def full_decode(path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def test_a_large_jpeg_decodes_at_the_largest_scale_that_still_meets_the_resize(tmp_path):
    path = save(photo(), tmp_path / "p.jpg", quality=90)
    assert load_rgb(path, need=ShorterSide(100)).size == (256, 192)  # 1/4: 192 >= 100, while 1/8 gives 96
    assert load_rgb(path, need=ShorterSide(96)).size == (128, 96)
    assert load_rgb(path, need=ShorterSide(800)).size == (1024, 768)  # upsampled anyway: full size
    assert load_rgb(path).size == (1024, 768)


def test_the_transformed_image_stays_within_a_few_levels_of_the_full_decode(tmp_path):
    path = save(photo(), tmp_path / "p.jpg", quality=90)
    pipeline = build_eval_transform(CONFIG)
    reduced = np.asarray(pipeline.image_part(load_rgb(path, need=pipeline.decode_need())), dtype=int)
    full = np.asarray(pipeline.image_part(full_decode(path)), dtype=int)
    assert reduced.shape == full.shape == (64, 64, 3)
    assert np.abs(reduced - full).mean() < 1.5 and np.abs(reduced - full).max() <= 16


def test_other_formats_are_reduced_after_decoding(tmp_path):
    path = save(photo((800, 600)), tmp_path / "p.png")
    assert load_rgb(path, need=ShorterSide(150)).size == (200, 150)
    reduced = np.asarray(load_rgb(path, need=ShorterSide(150)), dtype=int)
    assert np.abs(reduced - np.asarray(full_decode(path).reduce(4), dtype=int)).max() == 0


@pytest.mark.parametrize("suffix", ["jpg", "png"])
@pytest.mark.parametrize("size", [(1001, 777), (641, 1283), (97, 3000)])
def test_reduced_size_predicts_the_decoded_size(tmp_path, suffix, size):
    """The decoded-image cache sizes its slots with reduced_size before any image is decoded."""
    path = save(photo(size), tmp_path / f"p.{suffix}")
    for need in (ShorterSide(40), ShorterSide(90), FixedSize(50, 120), LongerSide(160)):
        image, full = decode_rgb(path, need=need)
        assert full == size
        assert image.size == reduced_size(need, size), need


def test_an_exif_rotated_photo_meets_a_non_square_need_upright(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 800x400, shown 400x800
    path = save(photo((800, 400)), tmp_path / "rotated.jpg", exif=exif.tobytes())
    # upright 400x800 at 1/4 is 100x200, enough for 90x190; read sideways it would need 1/2
    image, full = decode_rgb(path, need=FixedSize(90, 190))
    assert full == (400, 800) and image.size == (100, 200)


def test_the_smallest_random_resized_crop_is_never_upsampled_by_the_reduction():
    rng = random.Random(0)
    for _ in range(300):
        width, height = rng.randrange(50, 5000), rng.randrange(50, 5000)
        need = CropArea(rng.randrange(16, 400), rng.randrange(16, 400), (rng.uniform(0.01, 1.0), 1.0),
                        (rng.uniform(0.3, 1.0), rng.uniform(1.0, 3.0)))
        w, h = reduced_size(need, (width, height))
        if (w, h) == (width, height):
            continue
        smallest = w * h * need.scale[0]
        assert math.sqrt(smallest * need.ratio[0]) >= need.width - 1e-9
        assert math.sqrt(smallest / need.ratio[1]) >= need.height - 1e-9


def test_augmentation_presets_decide_their_scale():
    """The documented choice: the default random resized crop (8 % of the area) decodes a 12 Mpx photo at
    1/2; `light` (half the area at least) and the evaluation resize at 1/8."""
    config = DataConfig(input_size=(3, 224, 224), crop_pct=0.875, interpolation="bicubic")
    assert reduction(build_train_transform("strong", config).decode_need(), 4032, 3024) == 2
    assert reduction(build_train_transform("light", config).decode_need(), 4032, 3024) == 8
    assert reduction(build_eval_transform(config).decode_need(), 4032, 3024) == 8
    assert reduction(build_eval_transform(config).decode_need(), 224, 224) == 1  # flowers12: as before
    # a pipeline that starts by cropping needs every pixel
    assert build_train_transform([{"op": "center_crop", "size": 64}], config).decode_need() is None


def test_the_dataset_decodes_for_its_transform(tmp_path):
    path = save(photo(), tmp_path / "p.jpg", quality=90)
    dataset = ImageDataset([(path, 0)], build_eval_transform(CONFIG))
    assert dataset.need == ShorterSide(73)
    tensor, label = dataset[0]
    full = build_eval_transform(CONFIG)(full_decode(path))
    assert tensor.shape == full.shape and (tensor - full).abs().mean() < 0.02


def damaged_jpegs(folder, count: int):
    """Truncated, overwritten and cut-out variants of a baseline and a progressive JPEG."""
    rng = random.Random(1)
    picture = Image.fromarray(np.random.default_rng(2).integers(0, 256, (120, 160, 3), dtype=np.uint8))
    for progressive in (False, True):
        buffer = io.BytesIO()
        picture.resize((1280, 1024)).save(buffer, "JPEG", quality=85, progressive=progressive)
        data = buffer.getvalue()
        for number in range(count):
            damaged = bytearray(data)
            if number % 3 == 0:
                damaged = damaged[:rng.randrange(300, len(data))]
            elif number % 3 == 1:
                for _ in range(rng.randrange(1, 40)):
                    damaged[rng.randrange(300, len(data))] = rng.randrange(256)
            else:
                start = rng.randrange(300, len(data))
                del damaged[start:start + rng.randrange(1, 400)]
            path = folder / f"{progressive}-{number}.jpg"
            path.write_bytes(bytes(damaged))
            yield path


def test_the_scan_at_the_smallest_scale_finds_what_a_full_decode_finds(tmp_path):
    assert reduction(HASH_NEED, 1280, 1024) == 8  # the scan decodes these at 1/8
    verdicts = []
    for path in damaged_jpegs(tmp_path, 30):
        try:
            load_rgb(path)
            full_problem = None
        except BadImage as exc:
            full_problem = exc.reason
        scanned = check_image(path)
        verdicts.append(full_problem is not None)
        assert (scanned.problem is None) == (full_problem is None), (path.name, full_problem, scanned.problem)
        if scanned.problem is None:
            assert scanned.size == (1280, 1024)
    assert 10 <= sum(verdicts) <= 50, "the damage should break some files and spare others"


def test_predict_inputs_are_decoded_in_threads_in_order_with_errors_in_place(tmp_path):
    """tlzoo.engine.inference.prepared_inputs: what predict (and an HTTP upload) decodes, a window ahead."""
    from tlzoo.engine.inference import prepared_inputs

    paths = [save(photo((400 + 10 * n, 300)), tmp_path / f"{n}.jpg", quality=85) for n in range(9)]
    (tmp_path / "bad.jpg").write_bytes(b"not a jpeg")
    items = paths[:4] + [tmp_path / "bad.jpg", Image.new("RGB", (0, 0)), photo((50, 40))] + paths[4:]
    for ahead in (1, 3, 64):
        got = list(prepared_inputs(items, lambda image: image.size, (255, 255, 255), ShorterSide(60), ahead=ahead))
        sizes = [size for size, _ in got]
        assert sizes[:4] == [reduced_size(ShorterSide(60), (400 + 10 * n, 300)) for n in range(4)]
        assert sizes[4:6] == [None, None] and sizes[6] == (50, 40)
        assert got[4][1] == "not an image (unknown format)" and got[5][1] == "image has no pixels (0x0)"
        assert sizes[7:] == [reduced_size(ShorterSide(60), (400 + 10 * n, 300)) for n in range(4, 9)]

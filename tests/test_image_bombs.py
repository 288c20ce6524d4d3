"""Images that would blow up memory, and damaged JPEGs that decode quietly, are bad files with a reason."""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from tlzoo.data import images
from tlzoo.data.images import BadImage, load_rgb
from tlzoo.data.scan import check_image

HERE = Path(__file__).resolve().parent


def thin_png(path: Path, width: int, height: int) -> Path:
    Image.new("L", (width, height), 128).save(path, optimize=True)
    return path


@pytest.mark.parametrize("size", [(1, 20000), (60000, 1), (3, 600)])
def test_thin_images_are_refused_from_their_header(tmp_path, size):
    path = thin_png(tmp_path / "thin.png", *size)
    assert path.stat().st_size < 2000  # a few hundred bytes on disk
    problem = check_image(path).problem
    assert problem and "too thin" in problem and "cap is 50:1" in problem


def test_an_aspect_ratio_at_the_cap_is_fine(tmp_path):
    assert check_image(thin_png(tmp_path / "wide.png", 500, 10)).problem is None


def test_images_over_the_pixel_cap_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    Image.new("RGB", (40, 30)).save(tmp_path / "big.png")
    assert "too large: 40x30" in check_image(tmp_path / "big.png").problem


BOMB_RUN = textwrap.dedent("""
    import resource, sys
    from pathlib import Path
    from torchvision import transforms as T
    from tlzoo.data.images import load_rgb
    from tlzoo.data.labelled import labelled_from
    from tlzoo.data.samples import ReaderOutput, Sample

    vm = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
    limit = vm + 1536 * 2**20  # what is mapped now plus 1.5 GiB: resizing a thin image needs far more
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    root = Path(sys.argv[1])
    train = [Sample(p, p.parent.name, str(p)) for p in sorted(root.glob("train/*/*.png"))]
    val = [Sample(p, p.parent.name, str(p)) for p in sorted(root.glob("val/*/*.png"))]
    data = labelled_from(ReaderOutput(train, val), max_bad_fraction=0.5)
    resize = T.Compose([T.Resize(224), T.CenterCrop(224), T.ToTensor()])
    for path, _ in data.train + data.val:  # what training does with every image the scan let through
        resize(load_rgb(path))
    print("SKIPPED", *[problem.reason for problem in data.skipped], sep="\\n")
""")


def test_thin_bombs_are_skipped_under_a_memory_limit(tmp_path):
    """Run in a child under RLIMIT_AS: a regression fails with MemoryError instead of swapping."""
    for split, count in (("train", 3), ("val", 1)):
        for name in ("a", "b"):
            folder = tmp_path / split / name
            folder.mkdir(parents=True)
            for index in range(count):
                Image.new("RGB", (20, 16), (index * 40, 90, 10)).save(folder / f"{index}.png")
    thin_png(tmp_path / "train" / "a" / "thin.png", 1, 60000)
    thin_png(tmp_path / "train" / "b" / "thin.png", 20000, 1)
    done = subprocess.run([sys.executable, "-c", BOMB_RUN, str(tmp_path)], capture_output=True, text=True,
                          timeout=120, cwd=HERE)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("too thin") == 2, done.stdout


def jpeg_bytes(progressive: bool = False) -> bytes:
    x = np.linspace(0, 255, 64)
    a, b = np.meshgrid(x, x)
    pixels = np.stack([a, b, 255 - a], -1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90, progressive=progressive)
    return buffer.getvalue()


def scan_data_start(data: bytes) -> int:
    return data.index(b"\xff\xda") + 2 + int.from_bytes(data[data.index(b"\xff\xda") + 2:][:2], "big")


@pytest.mark.parametrize("progressive", [False, True])
def test_intact_jpegs_pass_the_marker_walk(tmp_path, progressive):
    (tmp_path / "ok.jpg").write_bytes(jpeg_bytes(progressive))
    assert check_image(tmp_path / "ok.jpg").problem is None


@pytest.mark.parametrize("progressive", [False, True])
@pytest.mark.parametrize("damage, reason", [(b"\xff\x01", "invalid marker 0xFF01"),
                                            (b"\xff\xd3", "restart marker out of order")])
def test_jpeg_with_overwritten_bytes_that_pillow_decodes_is_bad(tmp_path, progressive, damage, reason):
    data = bytearray(jpeg_bytes(progressive))
    start = scan_data_start(bytes(data)) + 40
    data[start:start + 2] = damage  # bytes that valid compressed data never holds
    path = tmp_path / "damaged.jpg"
    path.write_bytes(bytes(data))
    with Image.open(path) as image:
        image.load()  # Pillow alone does not notice
    problem = check_image(path).problem
    assert problem and problem.startswith(f"corrupt JPEG data: {reason}"), problem


def test_truncated_jpeg_is_bad_even_when_another_library_allows_truncated_images(tmp_path, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    data = jpeg_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(BadImage, match="truncated"):
        load_rgb(path)

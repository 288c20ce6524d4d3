"""Facts that tlzoo works out in one place only: the modules that need them read that one place."""

from __future__ import annotations

from pathlib import Path

from tlzoo.data.images import IMAGE_EXTENSIONS


def test_predict_finds_in_folders_exactly_the_suffixes_readers_read(tmp_path):
    from tlzoo.engine.inference import collect_images

    for suffix in IMAGE_EXTENSIONS:
        (tmp_path / f"x{suffix.upper()}").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image")
    found = collect_images([tmp_path])
    assert sorted(p.suffix.lower() for p in found) == sorted(IMAGE_EXTENSIONS)

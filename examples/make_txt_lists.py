"""Write seed-001-style image lists for an ImageFolder tree.

    python examples/make_txt_lists.py ../shared/datasets/flowers12 examples/lists/flowers12

writes OUT/train.txt and OUT/test.txt (one 'PATH LABEL' line per image, the
path relative to the list file, the label an integer) and OUT/classes.txt
(class folder names, line 1 is label 0). Classes are numbered in the order the
imagefolder reader uses (natural sort of the training class folders; hidden
folders are skipped), so a txt_list run and an imagefolder run agree.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tlzoo.data.images import IMAGE_EXTENSIONS
from tlzoo.plugins.readers.formats import read_split_folder


def list_lines(folder: Path, out_dir: Path, index: dict[str, int]) -> list[str]:
    classes, samples, problems = read_split_folder(folder, set(IMAGE_EXTENSIONS))
    for problem in problems:
        print(f"warning: {problem.origin}: {problem.reason}", file=sys.stderr)
    unknown = sorted(set(classes) - set(index))
    if unknown:
        raise SystemExit(f"error: {folder} has class folder(s) missing from the training folder: {', '.join(unknown)}")
    return [f"{Path(os.path.relpath(s.path, out_dir)).as_posix()} {index[s.label]}" for s in samples]


def write_lists(root: Path, out_dir: Path, train: str = "train", val: str = "test") -> dict[str, int]:
    """Write the three files; returns the number of lines written per file."""
    classes, _, _ = read_split_folder(root / train, set(IMAGE_EXTENSIONS))
    if not classes:
        raise SystemExit(f"error: {root / train} has no class folders")
    index = {name: i for i, name in enumerate(classes)}
    out_dir.mkdir(parents=True, exist_ok=True)
    out_dir = out_dir.resolve()
    written = {}
    for folder, name in ((train, "train.txt"), (val, "test.txt")):
        lines = list_lines((root / folder).resolve(), out_dir, index)
        (out_dir / name).write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        written[name] = len(lines)
    (out_dir / "classes.txt").write_text("".join(name + "\n" for name in classes), encoding="utf-8")
    written["classes.txt"] = len(classes)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="folder holding the split folders")
    parser.add_argument("out", type=Path, help="folder that receives train.txt, test.txt and classes.txt")
    parser.add_argument("--train", default="train", help="training folder inside root (default: train)")
    parser.add_argument("--val", default="test", help="validation folder inside root (default: test)")
    args = parser.parse_args(argv)
    for folder in (args.root / args.train, args.root / args.val):
        if not folder.is_dir():
            raise SystemExit(f"error: {folder} is not a folder")
    written = write_lists(args.root, args.out, args.train, args.val)
    print(", ".join(f"{args.out / name}: {count} lines" for name, count in written.items()))


if __name__ == "__main__":
    main()

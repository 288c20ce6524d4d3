"""tlzoo inspect and a run's data findings: planted flipped labels, copies and outliers found; every reader's layout."""

from __future__ import annotations

import csv
import io
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from support import COLOURS, write_spec
from tlzoo.data.decode_size import reduction
from tlzoo.data.phash import HASH_NEED, NO_HASH
from tlzoo.data.scan import check_image
from tlzoo.findings.balance import balance_of, small_class_issues
from tlzoo.findings.duplicates import PIXEL_AGREEMENT, SUPPORT_CLOSENESS, confirmed, duplicate_issues, evidence
from tlzoo.findings.find import SplitData, find_issues
from tlzoo.findings.hashing import CENTRES, hash_distances, image_hashes, pixel_agreement
from tlzoo.findings.issues import Findings, findings_json, issues_csv
from tlzoo.findings.mislabelled import WEAK_PROBE, mislabelled_issues
from tlzoo.findings.outliers import outlier_issues

SIDE = 64
CLASSES = 3
FLIPS = [("class0", 2, "class1"), ("class1", 4, "class2"), ("class2", 6, "class0")]


def natural_image(rng, colour, side: int = SIDE) -> Image.Image:
    """A class colour modulated by 1/f noise: photo-like spectra, so perceptual hashes behave as on photos."""
    frequency = np.sqrt(np.fft.fftfreq(side)[:, None] ** 2 + np.fft.fftfreq(side)[None, :] ** 2)
    field = np.fft.ifft2(np.exp(2j * np.pi * rng.uniform(size=(side, side))) / np.maximum(frequency, 1 / side)).real
    field = (field - field.mean()) / field.std()
    pixels = np.array(colour, dtype=np.float32) * (0.65 + 0.25 * field[..., None]) + rng.normal(0, 3, (side, side, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def make_dirty_folder(root, per_class=(16, 5, 5), seed=0) -> dict:
    """train/val/test of CLASSES colours; then 3 labels flipped (moved to another class folder), a test image
    copied into train resized to 75 % and re-encoded, a val image copied cropped by 5 % a side. Returns the plants."""
    rng = np.random.default_rng(seed)
    for split, count in zip(("train", "val", "test"), per_class):
        for c in range(CLASSES):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for number in range(count):
                natural_image(rng, COLOURS[c]).save(folder / f"{number}.png")
    flipped = {}
    for source, number, target in FLIPS:
        moved = root / "train" / target / f"{source}_{number}.png"
        (root / "train" / source / f"{number}.png").rename(moved)
        flipped[str(moved)] = source
    with Image.open(root / "test" / "class0" / "1.png") as image:
        image.resize((48, 48), Image.Resampling.BICUBIC).save(root / "train" / "class0" / "copy_test1.jpg", quality=80)
    with Image.open(root / "val" / "class1" / "2.png") as image:
        image.crop((3, 3, SIDE - 3, SIDE - 3)).save(root / "train" / "class1" / "crop_val2.jpg", quality=90)
    leaks = {(str(root / "train" / "class0" / "copy_test1.jpg"), str(root / "test" / "class0" / "1.png")),
             (str(root / "train" / "class1" / "crop_val2.jpg"), str(root / "val" / "class1" / "2.png"))}
    return {"flipped": flipped, "leaks": leaks}


@pytest.fixture(scope="module")
def dirty(tmp_path_factory):
    root = tmp_path_factory.mktemp("dirty") / "data"
    return root, make_dirty_folder(root)


def listing(root) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*"))


def inspect(target, out, capsys, *more: str) -> str:
    from tlzoo.cli.main import main

    main(["inspect", str(target), "--backbone", "test/tiny_cnn", "--format", "csv", "--out", str(out),
          "--set", f"cache.dir={out.parent / 'cache'}", "--set", "train.precision=fp32", *more])
    return capsys.readouterr().out


def rows_of(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def check_plants(rows: list[dict], plants: dict) -> None:
    suspects = [row for row in rows if row["kind"] == "mislabelled" and row["split"] == "train"]
    top = {row["path"]: row["suggested"] for row in suspects[:2 * len(plants["flipped"])]}
    assert {path: top.get(path) for path in plants["flipped"]} == plants["flipped"]  # found, true class suggested
    leaks = {(row["path"], row["other_path"]) for row in rows if row["kind"] == "leak"}
    assert plants["leaks"] <= leaks


def test_inspect_finds_the_planted_flips_and_copies_in_a_data_folder_and_moves_nothing(
        dirty, tmp_path, tiny_backbone, one_thread, capsys, monkeypatch):
    def decoded_again(paths, threads=4):
        raise AssertionError(f"the findings decoded {len(paths)} image(s) the scan had already hashed")

    monkeypatch.setattr("tlzoo.findings.find.hash_files", decoded_again)
    root, plants = dirty
    before = listing(root)
    out = tmp_path / "out"
    printed = inspect(root, out, capsys)
    rows = rows_of(printed)
    check_plants(rows, plants)
    assert listing(root) == before  # nothing moved, deleted or added
    assert (out / "issues.csv").read_text() == printed
    findings = Findings.from_json(json.loads((out / "findings.json").read_text()))
    assert findings.splits == {"train": 50, "val": 15, "test": 15}
    assert {row["split"] for row in rows} <= {"train", "val", "test"}
    html = (out / "inspect.html").read_text()
    assert '<section id="data-findings">' in html and "data:image/jpeg;base64," in html
    assert "crop_val2.jpg" in html and "class2_6.png" in html  # thumbnails of a leak and a flip


LAYOUTS = ["spec-imagefolder", "txt_list", "csv", "folder-train-test", "folder-of-classes"]


def write_layout(layout: str, data, folder):
    """The dirty data as `layout` sees it: a spec for a reader, or a bare folder to pass to inspect."""
    if layout.startswith("folder-"):
        target = folder / "data"
        if layout == "folder-train-test":  # no val/: test/ is the held-out split
            shutil.copytree(data / "train", target / "train")
            shutil.copytree(data / "test", target / "test")
        else:
            shutil.copytree(data / "train", target)
        return target
    if layout == "spec-imagefolder":
        return write_spec(folder, data, data={"reader": {"name": "imagefolder", "options": {
            "root": str(data), "train": "train", "val": "val", "test": "test"}}})
    classes = [f"class{c}" for c in range(CLASSES)]
    (folder / "classes.txt").write_text("\n".join(classes) + "\n")
    files = {}
    for split in ("train", "val", "test"):
        items = [(p, classes.index(p.parent.name)) for p in sorted((data / split).rglob("*.*"))]
        if layout == "txt_list":
            files[split] = f"{split}.txt"
            (folder / files[split]).write_text("".join(f"{p} {label}\n" for p, label in items))
        else:
            files[split] = f"{split}.csv"
            (folder / files[split]).write_text("path,label\n" + "".join(f"{p},{classes[label]}\n"
                                                                         for p, label in items))
    options = {**files, **({"classes": "classes.txt"} if layout == "txt_list" else {})}
    return write_spec(folder, data, data={"reader": {"name": layout, "options": options}})


@pytest.mark.parametrize("layout", LAYOUTS)
def test_inspect_reads_every_reader_layout(dirty, tmp_path, tiny_backbone, one_thread, capsys, layout):
    root, plants = dirty
    target = write_layout(layout, root, tmp_path)
    rows = rows_of(inspect(target, tmp_path / "out", capsys))
    findings = json.loads((tmp_path / "out" / "findings.json").read_text())
    if layout == "folder-of-classes":  # one split, 'all': flips still found, copies of other splits are gone
        assert findings["splits"] == {"all": 50}
        suspects = [row["path"] for row in rows if row["kind"] == "mislabelled"]
        assert {p.replace(str(root / "train"), str(target)) for p in plants["flipped"]} <= set(suspects[:6])
    elif layout == "folder-train-test":
        assert findings["splits"] == {"train": 50, "test": 15}
        moved = {(a.replace(str(root), str(target)), b.replace(str(root), str(target)))
                 for a, b in plants["leaks"] if "/test/" in b}
        assert moved <= {(row["path"], row["other_path"]) for row in rows if row["kind"] == "leak"}
    else:
        assert findings["splits"] == {"train": 50, "val": 15, "test": 15}
        check_plants(rows, plants)


def test_inspect_lists_the_files_it_could_not_read(dirty, tmp_path, tiny_backbone, one_thread, capsys):
    """A damaged image and a file that is no image are findings too: printed, in skipped.txt, never dropped silently;
    an --out used again without them loses the stale list."""
    from tlzoo.cli.main import main

    root = tmp_path / "data"
    shutil.copytree(dirty[0], root)
    damaged = root / "train" / "class1" / "damaged.jpg"
    damaged.write_bytes((root / "train" / "class1" / "0.png").read_bytes()[:60])
    (root / "train" / "class0" / "notes.jpg").write_text("not an image")
    out = tmp_path / "out"
    main(["inspect", str(root), "--backbone", "test/tiny_cnn", "--out", str(out), "--set", "train.precision=fp32",
          "--set", f"cache.dir={tmp_path / 'cache'}"])
    printed, err = capsys.readouterr()
    assert "unreadable, left out: 2" in printed and str(damaged) in printed
    assert f"2 file(s) could not be read and were left out, listed in {out / 'skipped.txt'}" in err
    listed = (out / "skipped.txt").read_text().splitlines()
    assert listed[0].startswith("# 2 input(s) skipped by the scan") and len(listed) == 3
    assert {line.split("\t")[0] for line in listed[1:]} == {str(damaged), str(root / "train" / "class0" / "notes.jpg")}
    assert "2 file(s) could not be read" in (out / "inspect.html").read_text()
    damaged.unlink()
    (root / "train" / "class0" / "notes.jpg").unlink()
    main(["inspect", str(root), "--backbone", "test/tiny_cnn", "--out", str(out), "--set", "train.precision=fp32",
          "--set", f"cache.dir={tmp_path / 'cache'}"])
    assert "unreadable" not in capsys.readouterr().out and not (out / "skipped.txt").exists()


def test_inspect_refuses_what_it_cannot_read(tmp_path, capsys):
    from tlzoo.cli.main import main

    for args, message in ([str(tmp_path / "nothing")], "does not exist"), ([str(tmp_path), "--format", "xml"],
                                                                          "--format 'xml'"):
        with pytest.raises(SystemExit) as exit_info:
            main(["inspect", *args])
        assert exit_info.value.code == 2 and message in capsys.readouterr().err


def run_with_report(tmp_path, data, **report):
    from tlzoo.engine.run import run_spec
    from tlzoo.registry import get_registry
    from tlzoo.spec import load_spec

    tmp_path.mkdir()
    spec = write_spec(tmp_path, data, report={"enabled": True, "top_losses": 2, **report},
                      data={"reader": {"name": "imagefolder", "options": {"root": str(data), "train": "train",
                                                                          "val": "val", "test": "test"}}})
    stream = io.StringIO()
    result = run_spec(load_spec(spec, get_registry()), tmp_path / "run", stream=stream)
    return result.run_dir, stream.getvalue()


def test_every_run_report_has_the_findings_section_unless_switched_off(dirty, tmp_path, tiny_backbone, one_thread):
    from tlzoo.engine.reporting import write_run_report

    root, plants = dirty
    run_dir, log = run_with_report(tmp_path / "on", root)
    html = (run_dir / "report.html").read_text()
    assert "<section id=\"data-findings\">" in html, log
    assert "findings: " in log and "likely mislabelled" in log, log
    check_plants(rows_of((run_dir / "issues.csv").read_text()), plants)
    (run_dir / "report.html").unlink()
    write_run_report(run_dir, [])  # `tlzoo report` renders the section again from findings.json
    assert '<section id="data-findings">' in (run_dir / "report.html").read_text()
    run_dir, log = run_with_report(tmp_path / "off", root, findings=False)
    assert '<section id="data-findings">' not in (run_dir / "report.html").read_text()
    assert not (run_dir / "issues.csv").exists() and not (run_dir / "findings.json").exists()
    assert "findings:" not in log


# ---------------------------------------------------------------- the findings' parts, on made-up features

def clusters(per_class=40, classes=4, dims=16, spread=0.35, seed=0):
    generator = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dims, generator=generator) * 2
    y = torch.arange(classes).repeat_interleave(per_class)
    return centres[y] + spread * torch.randn(len(y), dims, generator=generator), y


def split(name, x, y, hashes=None):
    return SplitData(name, [f"{name}/{i}.png" for i in range(len(y))], y, x)


def test_flipped_labels_are_the_top_suspects_with_their_true_class_suggested(one_thread):
    x, y = clusters()
    noisy = y.clone()
    flipped = [3, 50, 97, 130, 12, 77]
    for row in flipped:
        noisy[row] = (y[row] + 1) % 4
    issues, settings = mislabelled_issues([split("train", x, noisy)], ["a", "b", "c", "d"])
    top = issues[:2 * len(flipped)]
    assert {issue.path for issue in top} >= {f"train/{row}.png" for row in flipped}
    assert all(issue.suggested == "abcd"[int(y[int(issue.path.split("/")[1][:-4])])] for issue in top
               if int(issue.path.split("/")[1][:-4]) in flipped)
    assert set(settings["thresholds"]) == set("abcd") and all(0 < t <= 1 for t in settings["thresholds"].values())


def test_clean_labels_on_separable_features_give_no_suspect(one_thread):
    x, y = clusters(spread=0.1)
    issues, _ = mislabelled_issues([split("train", x, y)], ["a", "b", "c", "d"])
    assert issues == []


def test_a_near_copy_in_features_counts_only_where_features_tell_images_apart():
    x, y = clusters(per_class=30, spread=1.0)
    val_x = x[:5] + 0.01 * torch.randn(5, x.shape[1])  # five near-copies of training rows in another split
    unhashed = [np.zeros((30 * 4, len(CENTRES)), dtype=np.uint64), np.zeros((5, len(CENTRES)), dtype=np.uint64)]
    splits = [split("train", x, y), split("val", val_x, y[:5])]
    issues, settings = duplicate_issues(splits, ["a", "b", "c", "d"], x.mean(0), unhashed)
    assert {(i.path, i.other_path) for i in issues} == {(f"train/{r}.png", f"val/{r}.png") for r in range(5)}
    assert all(i.kind == "leak" and i.detail.startswith("features") for i in issues)
    # features that barely differ (every image alike to the backbone): no feature evidence at all
    flat = torch.ones(120, 16) + 0.001 * torch.randn(120, 16)
    issues, settings = duplicate_issues([split("train", flat, y)], ["a", "b", "c", "d"], flat.mean(0) * 0,
                                        unhashed[:1])
    assert issues == [] and not settings["features_used"]


def test_the_hash_keeps_resized_recompressed_and_slightly_cropped_copies_close(tmp_path):
    rng = np.random.default_rng(1)
    paths = []
    for number in range(12):
        path = tmp_path / f"{number}.png"
        natural_image(rng, (120, 150, 90), side=160).save(path)
        paths.append(path)
    with Image.open(paths[0]) as image:
        image.resize((100, 100), Image.Resampling.BICUBIC).save(tmp_path / "resized.jpg", quality=70)
        image.crop((8, 8, 152, 152)).save(tmp_path / "cropped.jpg", quality=85)  # 5 % a side
    original = image_hashes(paths[0])[None]
    for copy in ("resized.jpg", "cropped.jpg"):
        assert hash_distances(image_hashes(tmp_path / copy)[None], original)[0, 0] <= 8
    others = np.stack([image_hashes(p) for p in paths[1:]])
    assert hash_distances(original, others).min() > 12
    assert hash_distances(image_hashes(tmp_path / "gone.png")[None], original)[0, 0] == 64  # unreadable: no match


def test_a_hash_match_the_features_do_not_back_must_hold_on_the_pixels(tmp_path):
    """A grey copy (features moved, pixels kept) stays a pair; an unrelated image the hash happened to match does
    not; a match the features back is not checked; an unreadable file confirms nothing."""
    rng = np.random.default_rng(5)
    paths = [tmp_path / "photo.png", tmp_path / "grey_copy.jpg", tmp_path / "other.png", tmp_path / "gone.png"]
    picture = natural_image(rng, (150, 110, 80), side=160)
    picture.save(paths[0])
    picture.convert("L").resize((120, 120), Image.Resampling.BICUBIC).save(paths[1], quality=75)
    natural_image(rng, (150, 110, 80), side=160).save(paths[2])
    # (cosine, bits, closeness) as candidate_pairs gives them: every pair within PIXEL_BITS
    weak, backed = (0.2, 4, -0.3), (0.8, 6, SUPPORT_CLOSENESS + 0.1)
    pairs = {(0, 1): weak, (0, 2): weak, (1, 2): backed, (0, 3): weak}
    kept = confirmed(pairs, paths, use_features=True, threads=1)
    assert set(kept) == {(0, 1), (1, 2)}
    assert kept[(0, 1)][3] >= PIXEL_AGREEMENT and kept[(1, 2)][3] is None
    assert "grey thumbnails correlate" in evidence(*kept[(0, 1)][:3], True, kept[(0, 1)][3])
    # where the features tell images apart no better than chance, every hash match is checked on the pixels
    assert set(confirmed(pairs, paths, use_features=False, threads=1)) == {(0, 1)}
    assert pixel_agreement([(paths[0], paths[2])])[0] < PIXEL_AGREEMENT


def test_the_scan_hashes_each_image_as_the_findings_would_from_the_file(tmp_path):
    """The scan decodes once (a photo at 1/8 scale) and its hashes are those of image_hashes(path)."""
    rng = np.random.default_rng(3)
    picture = natural_image(rng, (90, 160, 120), side=256)
    files = {"photo.jpg": picture.resize((1600, 1200)), "small.jpg": picture.resize((224, 224)),
             "grey.png": picture.convert("L"), "alpha.png": picture.convert("RGBA")}
    for name, image in files.items():
        image.save(tmp_path / name)
    assert reduction(HASH_NEED, 1600, 1200) == 8
    for name in files:
        scanned = check_image(tmp_path / name)
        assert scanned.problem is None
        assert list(scanned.hashes) == image_hashes(tmp_path / name).tolist(), name
        assert NO_HASH not in scanned.hashes


def test_an_image_far_from_every_training_image_is_the_outlier():
    x, y = clusters(per_class=30, spread=0.5)
    x = x - x.min()  # all features positive, as after a ReLU
    odd = torch.zeros(1, x.shape[1])
    odd[0, 0] = 1.0
    issues, settings = outlier_issues([split("train", x, y), split("test", odd, torch.tensor([0]))], list("abcd"))
    assert issues[0].path == "test/0.png" and issues[0].score >= settings["outlier_robust_z"]
    assert issues[0].score > 2 * issues[1].score  # far beyond the farthest training image
    assert len(issues) - 1 <= 0.05 * len(y)  # a Gaussian cloud's own tail: a few at most


def test_balance_names_the_small_class_and_its_balanced_weight():
    y = torch.tensor([0] * 30 + [1] * 30 + [2] * 6)
    balance = balance_of([split("train", torch.zeros(66, 2), y)], ["big", "also_big", "rare"])
    assert balance.counts == {"train": [30, 30, 6]} and balance.smallest[0] == "rare" and balance.ratio == 5.0
    assert balance.weights[2] == pytest.approx(66 / (3 * 6), abs=1e-4)
    issues = small_class_issues(balance, "train")
    assert [(i.kind, i.label) for i in issues] == [("small_class", "rare")] and "3.67" in issues[0].detail


def test_findings_round_trip_through_json_and_write_one_csv_row_per_issue(one_thread):
    x, y = clusters(per_class=10)
    noisy = y.clone()
    noisy[0] = 3
    findings = find_issues([split("train", x, noisy)], list("abcd"), threads=1)
    again = Findings.from_json(json.loads(findings_json(findings)))
    assert again == findings
    rows = rows_of(issues_csv(findings))
    assert len(rows) == len(findings.issues) and rows[0]["kind"] == "mislabelled" and rows[0]["path"] == "train/0.png"


def test_a_probe_that_is_often_wrong_out_of_fold_gets_a_note_and_a_good_one_none(one_thread):
    def probe_notes(findings):
        return [note for note in findings.notes if note.startswith("the probe behind 'likely mislabelled' gets only")]

    x, y = clusters(per_class=20, spread=0.1)
    findings = find_issues([split("train", x, y)], list("abcd"), threads=1)
    assert findings.settings["probe_top1"] >= WEAK_PROBE and probe_notes(findings) == []
    noise = torch.randn(x.shape, generator=torch.Generator().manual_seed(1))  # features that carry no class
    findings = find_issues([split("train", noise, y)], list("abcd"), threads=1)
    assert findings.settings["probe_top1"] < WEAK_PROBE and len(probe_notes(findings)) == 1


def test_random_weights_give_no_findings_but_a_reason(dirty, tmp_path, tiny_backbone, one_thread, capsys):
    from tlzoo.cli.main import main

    root, _ = dirty
    with pytest.raises(SystemExit) as exit_info:
        main(["inspect", str(root), "--backbone", "test/tiny_cnn", "--set", "backbone.weights=none",
              "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2 and "random features say nothing" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()

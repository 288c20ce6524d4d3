"""The report's data-findings section (tlzoo.findings), and `tlzoo inspect`'s page made of that section alone."""

from __future__ import annotations

import datetime
from importlib import resources
from pathlib import Path

import jinja2
from markupsafe import Markup

from tlzoo.errors import TlzooError
from tlzoo.findings.issues import Findings
from tlzoo.report.thumbnails import thumbnail_uri

TEMPLATE = "findings.html"
THUMBNAIL = 100  # smaller than the top losses': a section may hold 48 of them (about 4 KB each)
SHOWN = {"mislabelled": 12, "leak": 10, "duplicate": 4, "outlier": 8}
BALANCE_ROWS = 30  # the smallest training classes first
COUNT_LABELS = {"mislabelled": "likely mislabelled", "leak": "leaks across splits",
                "duplicate": "duplicate pairs within a split", "outlier": "outliers",
                "small_class": "small classes"}
PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>tlzoo inspect: {{ title }}</title>
<style>
  body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1180px; padding: 8px 32px 40px;
         color: #1d232a; line-height: 1.4; }
  h2 { font-size: 1.15rem; color: #1f3a5f; }
  table { border-collapse: collapse; width: 100%; font-size: .88rem; }
  th, td { padding: 4px 8px; border-bottom: 1px solid #e3e7eb; text-align: left; }
  td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
  tr.weak td { background: #fff4e5; }
  .scroll { max-height: 520px; overflow-y: auto; }
  .muted { color: #5b6875; font-size: .85rem; }
</style></head>
<body><h1>tlzoo inspect: {{ title }}</h1><p class="muted">written {{ generated }}</p>
{{ section }}
</body></html>
"""


def _name(path: str) -> str:
    return Path(path).name


def _environment() -> jinja2.Environment:
    return jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                              lstrip_blocks=True)


def section_context(findings: Findings, issues_file: str, source: str) -> dict:
    counts = findings.counts()
    thumb = lambda path: thumbnail_uri(Path(path), THUMBNAIL) if path else None  # noqa: E731

    def single(kind: str) -> list[dict]:
        return [{"path": i.path, "name": _name(i.path), "split": i.split, "label": i.label,
                 "suggested": i.suggested, "score": f"{i.score:.2f}", "thumbnail": thumb(i.path)}
                for i in findings.of_kind(kind)[:SHOWN[kind]]]

    def pairs(kind: str) -> list[dict]:
        return [{"split": i.split, "label": i.label, "other_split": i.other_split, "other_label": i.other_label,
                 "detail": i.detail, "name": _name(i.path), "other_name": _name(i.other_path),
                 "thumbnails": [thumb(i.path), thumb(i.other_path)]} for i in findings.of_kind(kind)[:SHOWN[kind]]]

    balance = findings.balance
    names = list(balance.counts)
    small = {i.label for i in findings.of_kind("small_class")}
    order = sorted(range(len(balance.classes)), key=lambda c: (balance.counts[names[0]][c], balance.classes[c]))
    rows = [{"name": balance.classes[c], "counts": [balance.counts[n][c] for n in names],
             "weight": f"{balance.weights[c]:.2f}", "small": balance.classes[c] in small} for c in order]
    ratio = "" if balance.ratio is None else \
        f" The largest training class has {balance.ratio:.1f}x the images of the smallest."
    return {
        "intro": f"{source} {', '.join(f'{n} {name}' for name, n in findings.splits.items())} images looked at "
                 f"in {findings.seconds:.1f} s.",
        "issues_file": issues_file,
        "counts": [{"label": COUNT_LABELS[kind], "count": n} for kind, n in counts.items()],
        "notes": findings.notes,
        "mislabelled": single("mislabelled"), "mislabelled_total": counts["mislabelled"],
        "pair_groups": [
            {"title": "Leaks: near-duplicates across splits", "pairs": pairs("leak"), "total": counts["leak"],
             "none": "No image of one split has a near-duplicate in another."},
            {"title": "Duplicates within a split", "pairs": pairs("duplicate"), "total": counts["duplicate"],
             "none": "No two images of one split are near-duplicates."}],
        "outliers": single("outlier"), "outliers_total": counts["outlier"],
        "outlier_z": findings.settings.get("outlier_robust_z", "-"),
        "split_names": names,
        "balance_rows": rows[:BALANCE_ROWS],
        "balance_more": max(0, len(rows) - BALANCE_ROWS),
        "balance_note": "Images per class, smallest training classes first (shaded: under half the median); the "
                        "last column is the loss weight train.class_weights \"balanced\" gives each image of the "
                        "class (1 for an average one)." + ratio,
    }


def render_section(findings: Findings, issues_file: str = "issues.csv",
                   source: str = "From the pretrained backbone's pooled features and perceptual hashes:") -> Markup:
    template = resources.files("tlzoo.report").joinpath(TEMPLATE).read_text(encoding="utf-8")
    return Markup(_environment().from_string(template).render(f=section_context(findings, issues_file, source)))


def write_findings_page(findings: Findings, out: Path, title: str, source: str) -> Path:
    """A self-contained HTML page holding the findings section alone (`tlzoo inspect --out`)."""
    html = _environment().from_string(PAGE).render(
        title=title, generated=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        section=render_section(findings, "issues.csv", source))
    try:
        Path(out).write_text(html, encoding="utf-8")
    except OSError as exc:
        raise TlzooError(f"cannot write {out}: {exc.strerror}", "pick a writable --out folder") from None
    return Path(out)

"""The report step: read a run directory, evaluate its best model image by image, write report.html.

Used at the end of `tlzoo run` (model still in memory) and by `tlzoo report`
(model reloaded). tlzoo.report renders; this module gathers what it renders.
"""

from __future__ import annotations

import json
from pathlib import Path

from tlzoo.engine.data_findings import ISSUES_FILE, read_findings
from tlzoo.errors import TlzooError
from tlzoo.report.records import ImageRecord, records_csv
from tlzoo.report.rundata import RunData
from tlzoo.report.sections import SECTIONS_FILE, section_from_json
from tlzoo.rundir import outputs

REPORT_FILE = "report.html"
PER_IMAGE_FILE = "per_image.csv"


def read_metrics(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise TlzooError(f"{path}:{number}: not a JSON line ({exc.msg})",
                                 "the run directory's metrics.jsonl is damaged") from None
    return records


def read_skipped(path: Path) -> list[tuple[str, str]]:
    """skipped.txt: a '#' header line, then 'origin<TAB>reason' lines (tlzoo.data.skipped.write_skipped)."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("#"):
            origin, _, reason = line.partition("\t")
            rows.append((origin, reason))
    return rows


def collect_run_data(run_dir: Path, records: list[ImageRecord], evaluated_on: str,
                     other_data: dict | None = None) -> RunData:
    run_dir = Path(run_dir)
    best_sidecar = run_dir / "best.json"
    return RunData(
        run_dir=run_dir,
        spec=outputs.read_json(run_dir / outputs.SPEC_FILE, "resolved spec"),
        metrics=read_metrics(run_dir / outputs.METRICS_FILE),
        summary=outputs.read_json(run_dir / outputs.SUMMARY_FILE, "run summary"),
        best=outputs.read_json(best_sidecar, "best model sidecar") if best_sidecar.is_file() else None,
        skipped=read_skipped(run_dir / outputs.SKIPPED_FILE),
        records=records,
        evaluated_on=evaluated_on,
        findings=read_findings(run_dir),
        other_data=other_data,
        sections=read_sections(run_dir / SECTIONS_FILE),
    )


def read_sections(path: Path) -> list:
    """The extra report sections a room above the engine left in the run directory (tlzoo.report.sections)."""
    if not path.is_file():
        return []
    value = outputs.read_json(path, "report sections")
    if not isinstance(value, list):
        raise TlzooError(f"{path}: not a list of sections", "the run directory's report_sections.json is damaged")
    return [section_from_json(item) for item in value]


def write_run_report(run_dir: Path, records: list[ImageRecord], out: Path | None = None, top_losses: int = 16,
                     evaluated_on: str = "the run's validation split", other_data: dict | None = None) -> Path:
    """report.html (default: in the run directory) and its PNG figures beside it.

    `other_data`: for records of data other than the run's validation split (`tlzoo report --data`), what
    they are ("what": "images of photos/") and their metrics ("images", "top1", "top5", "loss").
    """
    from tlzoo.report.page import write_report

    data = collect_run_data(run_dir, records, evaluated_on, other_data)
    return write_report(data, Path(out) if out is not None else Path(run_dir) / REPORT_FILE, top_losses)


def write_per_image_csv(path: Path, records: list[ImageRecord]) -> None:
    path = Path(path)
    if not path.parent.is_dir():
        raise TlzooError(f"cannot write {path}: folder {path.parent} does not exist", "create it or pick another path")
    try:
        outputs.atomic_write(path, records_csv(records).encode())
    except OSError as exc:
        raise TlzooError(f"cannot write {path}: {exc.strerror}", "pick a path you can write to") from None


def best_model_records(setup, log, best_eval=None, temperature: float = 1.0) -> list[ImageRecord]:
    """Per-image records of the run's validation split from its best model.

    `setup` is the run's tlzoo.engine.run.RunSetup. `best_eval`, the best epoch's
    EvalResult when this process validated it (tlzoo.engine.loop.Trainer.best_eval),
    already holds the logits in the split's order: no pass is needed. Otherwise
    (a resumed run whose best epoch came before the resume, `tlzoo report`)
    best.safetensors is loaded into the run's model for one uncached pass, with
    the run's eval transform, batch size and precision; either way the records
    agree with the best epoch's metrics. Probabilities and losses are at the run's fitted
    `temperature`, as `tlzoo evaluate --per-image` gives them.
    """
    from tlzoo.data.batches import SourceSetup, eval_source
    from tlzoo.data.transforms import build_eval_transform
    from tlzoo.engine.metrics import logits_over
    from tlzoo.engine.per_image import records_from_logits
    from tlzoo.rundir.trust_store import load_best_weights
    from tlzoo.runtime.device import resolve_workers

    best = setup.run_dir / "best.safetensors"
    items = setup.data.val
    if not best.is_file() or not items:
        return []
    if best_eval is not None and best_eval.logits is not None and best_eval.labels.tolist() == [
            label for _, label in items]:
        return records_from_logits(items, best_eval.logits / temperature, best_eval.labels, setup.data.classes)
    spec = setup.resolved.spec
    load_best_weights(setup.built.model, best)
    source = eval_source(SourceSetup(items, build_eval_transform(setup.built.data_config), setup.eval_batch_size,
                                     resolve_workers(spec.data.num_workers, len(items)), spec.train.seed,
                                     shuffle=False, background=spec.data.background))
    logits, labels = logits_over(setup.built.model, source, setup.device, setup.precision,
                                 fast=setup.fast, log=log)
    return records_from_logits(items, logits / temperature, labels, setup.data.classes)


def report_after_run(setup, log, best_eval=None, temperature: float = 1.0) -> Path | None:
    """The end of `tlzoo run`: per_image.csv and report.html in the run directory, unless the spec says no."""
    settings = setup.resolved.spec.report
    if not settings.enabled:
        return None
    if settings.findings:
        run_findings(setup, log)
    try:
        records = best_model_records(setup, log, best_eval, temperature)
        if records:
            write_per_image_csv(setup.run_dir / PER_IMAGE_FILE, records)
        path = write_run_report(setup.run_dir, records, top_losses=settings.top_losses,
                                evaluated_on="the run's validation split (best model)")
    except TlzooError as exc:  # the run itself is complete and saved: a report problem must not fail it
        log(f"report: not written: {exc.message}\n  HINT: fix the cause, then run 'tlzoo report {setup.run_dir}'")
        return None
    log(f"report: {path}")
    return path


def run_findings(setup, log) -> None:
    """findings.json and issues.csv in the run directory (tlzoo.engine.data_findings); a problem is logged, never
    fatal: the run is complete and saved."""
    from tlzoo.engine.data_findings import data_findings, summary_line, write_findings
    from tlzoo.runtime import distributed

    hint = f"HINT: tlzoo inspect {setup.run_dir / outputs.SPEC_FILE} looks at the same data"
    if distributed.active():  # the feature pass would wait on the other processes, which have finished
        log(f"findings: not computed in a job of {distributed.world_size()} processes\n  {hint}")
        return
    try:
        findings = data_findings(setup.resolved, setup.data, lambda line: log(f"findings: {line}"))
        write_findings(setup.run_dir, findings)
    except TlzooError as exc:
        log(f"findings: not computed: {exc.message}\n  {hint}")
        return
    log(f"findings: {summary_line(findings)}; listed in {setup.run_dir / ISSUES_FILE}")

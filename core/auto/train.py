"""`tlzoo train DATA --time 10m`: from a folder of photos to the best model the budget can find.

Read and scan DATA (tlzoo.auto.layout), measure this machine, search on the
validation split (tlzoo.auto.search), then train the chosen spec as an ordinary
run whose directory also holds decisions.json and a report section saying how
the model was chosen. The test split enters only that final run's spec. A
chosen fine-tune's final run takes over its trial's epochs instead of training
them again (tlzoo.engine.adopt); a head is trained by the final run. On a
validation split under recipes.REFIT_BELOW images the final run then trains
again, all its epochs, on the training and validation images together
(train.refit).

Ctrl-C or SIGTERM during the search stops at once and keeps nothing (trial runs
live in a scratch folder that is removed after the final run); during a head's
final run the engine saves a resumable `last` as `tlzoo run` does.
"""

from __future__ import annotations

import glob
import re
import sys
import tempfile
import time
from pathlib import Path

import torch

from tlzoo.auto import estimates
from tlzoo.auto.budget import OVERRUN, Budget, clock_text, parse_duration
from tlzoo.auto.deadline import DeadlineHook
from tlzoo.auto.decisions import DECISIONS_FILE, Decisions, Row
from tlzoo.auto.fold_check import check_finetune
from tlzoo.auto.layout import Layout, check_usable, detect_layout, summary_line
from tlzoo.auto.recipes import REFIT_BELOW, base_spec
from tlzoo.auto.probing import choose_backbone, probe_candidates
from tlzoo.auto.search import Search, choose_head, choose_recipe, final_spec, head_choice, try_other_backbones
from tlzoo.auto.throughput import measure_writes
from tlzoo.auto.timing import check_one_pass, measure_candidates
from tlzoo.cache import run_cache_scope
from tlzoo.data.class_mapping import map_splits
from tlzoo.data.bad_files import MAX_BAD_FRACTION, TOLERATED_BAD_FILES, TooManyBadFiles, check_bad_files
from tlzoo.data.images import bad_without_opening
from tlzoo.data.labelled import EmptyClasses, labelled_from
from tlzoo.data.samples import Problem
from tlzoo.engine.extras import RunExtras
from tlzoo.engine.progress import LineStream
from tlzoo.engine.run import run_spec
from tlzoo.errors import TlzooError
from tlzoo.rundir import outputs
from tlzoo.runtime.device import configure_threads, resolve_device
from tlzoo.runtime.interrupts import Interrupted, StopRequest, signal_name
from tlzoo.runtime.precision import resolve_precision
from tlzoo.spec import resolve_spec


FINISH_MARGIN_S = 5.0  # kept free after the final run's last epoch, on top of the estimate of its end


class PrefixedStream(LineStream):
    """The trial runs' own progress lines, indented under the search's."""

    def __init__(self, stream, prefix: str = "    | "):
        super().__init__(lambda line: stream.write(prefix + line + "\n"))
        self.stream = stream

    def flush(self) -> None:
        self.stream.flush()


def run_name(source: Path) -> str:
    name = re.sub(r"[^\w.-]+", "_", source.stem if source.is_file() else source.name).strip("._")[:80]
    return name or "train"


def note_stopped_runs(root: Path, name: str, log) -> None:
    """Name the earlier runs of this name that were killed before their end: resuming one is cheaper than the
    new search this command starts (a user who reruns the command after a kill may not know)."""
    pattern = re.compile(re.escape(name) + r"(-\d+)?")
    stopped = sorted(path for path in root.glob(f"{glob.escape(name)}*")
                     if pattern.fullmatch(path.name) and outputs.stopped_run(path)) if root.is_dir() else []
    for path in stopped:
        log(f"note: {path} holds a run of this name that stopped before its end; `tlzoo run --resume {path}` "
            "finishes it (this command starts a new search)")


def machine() -> dict:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    device = resolve_device("auto")
    return {"cpu": cpu, "device": str(device), "threads": torch.get_num_threads(),
            "precision": resolve_precision("auto", device)}


def check_output(output: Path | None) -> None:
    """Fail before the search, not after it, on an --output that `tlzoo run` would refuse."""
    if output is not None:
        outputs.refuse_taken(output)


def read_data(layout: Layout, registry, log):
    """The search's data (train and val, scanned) and seconds per image of the scan; the test split only counted."""
    def listing(reader: dict):
        return resolve_spec({"data": {"reader": reader}}, registry, Path.cwd(), "tlzoo train").reader.build(Path.cwd())

    output = listing(layout.reader)
    check_usable(output, layout)
    started = time.perf_counter()
    try:
        data = labelled_from(output)
    except (TooManyBadFiles, EmptyClasses) as exc:
        raise reworded(exc, layout) from None
    images = len(data.train) + len(data.val) + len(data.skipped)
    load_s = (time.perf_counter() - started) / max(1, images)
    test_count = None
    if layout.test is not None:  # the file names only: no test image is opened before the final run
        final = listing(layout.final_reader())
        map_splits(final)  # a test label that names no training class fails now, not after the search
        try:
            check_test_files(output, final, data)
        except TooManyBadFiles as exc:
            raise reworded(exc, layout) from None
        test_count = len(final.test or [])
    return data, load_s, test_count


def check_test_files(output, final, data) -> None:
    """Bad test files that the final run's scan would count with the bad train and val files, beyond what it
    skips, stop that run after the whole search: refuse them now. What is wrong is told from names and file
    metadata (missing, empty, HEIC...), so no test image is opened; a damaged one is skipped by the final run."""
    test = final.test or []
    known = set(output.problems)  # the train and val lists' own, already in data.skipped
    list_problems = [problem for problem in final.problems if problem not in known]
    found = [Problem(str(sample.path), reason) for sample in test if (reason := bad_without_opening(sample.path))]
    listed_before = len(data.train) + len(data.val) + len(data.skipped) - len(output.problems)
    total = listed_before + len(test) + len(final.problems)
    check_bad_files(list(data.skipped) + list_problems + found, total, "skip", MAX_BAD_FRACTION, TOLERATED_BAD_FILES)


def reworded(exc: TlzooError, layout: Layout) -> TlzooError:
    """The data checks' errors in tlzoo train's terms: they name spec fields, which tlzoo train sets itself."""
    if isinstance(exc, TooManyBadFiles):
        return TlzooError(f"{exc.count} of {exc.total} files are bad, more than tlzoo train skips on its own "
                          f"({exc.max_fraction:.0%} of them, or {exc.tolerated}); the search did not start:\n"
                          + exc.listing,
                          "convert, fix or remove those files and run tlzoo train again")
    where = "folders" if "folders" in layout.kind else "rows"
    zipped = " (__MACOSX is what a zip made on a Mac leaves: delete it)" if "__MACOSX" in exc.names else ""
    return TlzooError(exc.message, f"add images to those classes, or remove their {where}{zipped}")


def train(data: str | Path, time_budget: str | float = "10m", candidates=(), offline: bool = False,
          test: str | Path | None = None, output: str | Path | None = None, seed: int = 0, registry=None,
          stream=None, clock=None, already: float = 0.0):
    """Search, then train the chosen spec; returns the engine's RunResult of the final run.

    `candidates`: tlzoo.probe.ranking.Candidate rows (the CLI passes those whose weights are here);
    `clock` and `already`: the budget's clock and the seconds spent before the call (the process's age).
    """
    from tlzoo.registry import get_registry

    registry = registry or get_registry()
    stream = stream or sys.stderr
    budget = Budget(parse_duration(time_budget), clock or time.monotonic, already)
    log = lambda message: print(f"train [{clock_text(budget.elapsed())}/{clock_text(budget.seconds)}]: {message}",
                                file=stream, flush=True)  # noqa: E731
    output = None if output is None else Path(output).expanduser()
    check_output(output)
    if not candidates:
        raise TlzooError("no candidate backbone", "pass --backbones PATTERN, or install weights "
                                                  "(tlzoo list backbones --offline shows those here)")
    configure_threads(keep_buffers=False)
    layout = detect_layout(Path(data), None if test is None else Path(test), seed)
    if output is None:
        note_stopped_runs(Path.cwd() / "runs", run_name(layout.source), log)
    # the trials live here until the final run has taken the chosen one over
    with tempfile.TemporaryDirectory(prefix="tlzoo-train-", ignore_cleanup_errors=True) as folder:
        scratch = Path(folder)
        try:
            with StopRequest(stream, what="during the search"), run_cache_scope():
                search_data, load_s, test_count = read_data(layout, registry, log)
                line = summary_line(layout, search_data, test_count)
                log(line)
                sizes = estimates.Sizes(len(search_data.train), len(search_data.val), test_count or 0,
                                        len(search_data.classes))
                decisions = Decisions(budget.seconds, seed, line, machine())
                if output is not None:
                    write_s = measure_writes(output, "--output", "pass an --output you can write")
                else:
                    write_s = measure_writes(Path.cwd() / "runs", "runs/ in the current folder",
                                             "run tlzoo train from a folder you can write, or pass --output")
                log(f"disk: checkpoints written at {1e-6 / write_s:.0f} MB/s where the run goes (fsynced)")
                search = Search(budget, registry, base_spec(run_name(layout.source), layout.reader, seed, "runs"),
                                search_data, sizes, load_s, scratch, decisions, log, PrefixedStream(stream),
                                write_s=write_s)
                choice = run_search(search, list(candidates), offline)
        except Interrupted as exc:
            raise Interrupted(exc.signum, f"stopped by {signal_name(exc.signum)} during the search, before any "
                                          "model was chosen; nothing was kept",
                              "run the command again: the features computed so far are in the activation "
                              "cache") from None
        return final_run(search, layout, choice, output, stream, log)


def run_search(search: Search, candidates, offline: bool):
    search.log(f"measuring {len(candidates)} candidate backbone(s) on this machine")
    speeds = measure_candidates(search, candidates, offline)
    search.budget.start_plan()
    check_one_pass(search, speeds)
    probed = probe_candidates(search, speeds)
    speed, features, correct = choose_backbone(search, probed)
    head, head_correct, head_loss = choose_head(search, speed, features, correct)
    head_only = head_choice(search, speed, head, head_correct, head_loss)
    best = try_other_backbones(search, probed, choose_recipe(search, head_only))
    return check_finetune(search, best, head_only, features)


def final_run(search: Search, layout: Layout, choice, output: Path | None, stream, log):
    budget, decisions = search.budget, search.decisions
    output_root = str((Path.cwd() / "runs").resolve())
    spec = final_spec(search, choice, layout.final_reader(), output_root)
    resolved = search.resolve(spec)
    if search.slowdown > 1:
        decisions.notes.append(f"Steps ran up to {search.slowdown:.1f}x slower than this machine measured at the "
                               "start (a busier machine): later estimates were scaled by that factor.")
    adopting = "" if choice.trial_dir is None else " (it takes over its trial's epochs: the same spec and seed)"
    if spec["train"].get("refit"):
        adopting += (f"; on a validation split of {search.sizes.val} images (under {REFIT_BELOW}) it then "
                     "trains again, all its epochs, on the training and validation images together (train.refit)")
    checked = [row for row in decisions.rows if row.step == "fold check" and row.seconds is not None]
    why = ("the head, which validated better than the chosen fine-tune on the other folds" if checked and
           not checked[-1].kept else "the best validation score the budget could pay for")
    decisions.add(Row("final choice", f"{choice.backbone}, {choice.recipe.describe()}",
                      choice.correct / max(1, search.sizes.val), None, True,
                      f"{why}; its final run was estimated at "
                      f"{search.scaled(choice.final_s):.0f} s{adopting}", search.scaled(choice.final_s)))
    decisions.chosen = {"backbone": choice.backbone, "recipe": choice.recipe.describe(),
                        "strategy": choice.recipe.strategy, "lr": choice.recipe.lr, "epochs": choice.recipe.epochs}
    log(f"final run: {choice.backbone}, {choice.recipe.describe()} (about {search.scaled(choice.final_s):.0f} s)"
        + adopting)
    if choice.cut_at is not None:
        decisions.notes.append(f"The budget stopped the chosen fine-tune's trial after epoch {choice.cut_at} of "
                               f"{choice.recipe.epochs}, and the final run took that over: `tlzoo run` of its "
                               "spec.json trains all of them.")
    hook = DeadlineHook(budget, search.scaled(choice.finish_s) + FINISH_MARGIN_S, log)
    extras = RunExtras(files={DECISIONS_FILE: decisions.to_json()}, report_sections=[decisions.report_section()],
                       epoch_hooks=[hook], adopt=choice.trial_dir)
    started = budget.elapsed()
    result = run_spec(resolved, output, stream=stream, extras=extras)
    summary = result.summary
    decisions.final = {
        "run_dir": str(result.run_dir),
        "val_top1": (summary.get("best") or {}).get("val_top1"),
        "test_top1": (summary.get("test") or {}).get("top1"),
        "best_epoch": summary.get("best_epoch"),
        "cut_by_budget_after_epoch": hook.cut_at if choice.cut_at is None else choice.cut_at,
        "took_over_trial": choice.trial_dir is not None,
        "refit": summary.get("refit"),
        "seconds": budget.elapsed() - started,
        "command_seconds": budget.elapsed(),
        "within_budget": budget.elapsed() <= budget.seconds * (1 + OVERRUN),
    }
    outputs.write_json(Path(result.run_dir) / DECISIONS_FILE, decisions.to_json())
    log(f"done: {budget.status()}; decisions in {Path(result.run_dir) / DECISIONS_FILE}")
    return result

"""The trust record in a run directory: `trust` in the best model's sidecar and header, its tensors under
`trust.` in the weights file.

After training the engine fits the temperature and the unknown threshold for
the best model and writes `best` again with them (atomically, as every
checkpoint). The sidecar check (tlzoo.rundir.sidecar) compares `trust` with the
header's copy, so an edited threshold in best.json is refused; the record's own
validation (tlzoo.trust.record) refuses one edited in both.
"""

from __future__ import annotations

from pathlib import Path

import torch

from tlzoo.errors import TlzooError
from tlzoo.model.weights import load_state_file
from tlzoo.rundir.checkpoint import load_checkpoint, save_checkpoint
from tlzoo.rundir.training_state import strip_training
from tlzoo.trust.record import TENSOR_PREFIX, Trust, tensors_of, validate_record


def load_best_weights(model: torch.nn.Module, path: Path) -> None:
    """The model's own tensors of a weights file (no trust or training state) into `model`."""
    model.load_state_dict(strip_training(load_state_file(path)), strict=True)


def store_trust(stem: Path, record: dict, tensors: dict[str, torch.Tensor]) -> None:
    """Write checkpoint `stem` again with `record` under "trust" and `tensors` under `trust.`."""
    weights, meta = load_checkpoint(stem)
    save_checkpoint(stem, with_trust_tensors(weights, tensors), {**meta, "trust": validate_record(record)})


def with_trust_tensors(weights: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`weights` with its `trust.` tensors replaced by `tensors`."""
    kept = {name: t for name, t in weights.items() if not name.startswith(TENSOR_PREFIX)}
    return {**kept, **{TENSOR_PREFIX + name: t.contiguous() for name, t in tensors.items()}}


def read_trust(meta: dict, weights: dict[str, torch.Tensor], where: Path) -> Trust | None:
    """The run's Trust, or None for a model saved without one (an older run, `last`)."""
    record = meta.get("trust")
    if record is None:
        return None
    try:
        return Trust.load(validate_record(record), tensors_of(weights))
    except ValueError as exc:
        raise TlzooError(f"{where}: the trust record is damaged: {exc}",
                         "the run directory was edited or damaged; restore it, or run `tlzoo run` again") from None

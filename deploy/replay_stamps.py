"""What each replay step's outputs depend on (:mod:`prunegym.core.stamps`), and the cleanup of a killed run."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

from prunegym.core.checkpoint import checkpoint_file
from prunegym.core.stamps import file_digest, stamp_of
from prunegym.core.train_config import teacher_precision_stamp

__all__ = ["clean_leftovers", "step_settings"]

log = logging.getLogger(__name__)


# each step: the steps it reads, and the options of ReplayConfig it depends on
_STEPS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "prune": ((), ("seed",)),
    "finetune": (
        ("prune",),
        (
            "epochs",
            "lr",
            "batch_size",
            "weight_decay",
            "warmup_epochs",
            "label_smoothing",
            "distill",
            "kd_alpha",
            "kd_temperature",
            "seed",
            "max_steps_per_epoch",
            "val_size",
        ),
    ),
    "transform": (("finetune",), ()),
    "export": (("transform",), ()),
    "quantize": (("export",), ("calib_images", "calib_method", "per_channel", "reduce_range", "seed")),
    "verify": (("quantize",), ("test_limit", "runtime")),
    "bench": (("quantize",), ("bench_threads", "bench_batch", "bench_repeats", "bench_rounds", "runtime")),
    "bundle": (("verify", "bench"), ()),
}


def step_settings(r: Any, step: str) -> dict[str, Any]:
    """The settings ``step`` of replay ``r`` (a :class:`~prunegym.deploy.replay.Replay`) is made from: its own
    options and the stamps of the steps it reads (so that a change anywhere redoes every step after it)."""
    reads, options = _STEPS[step]
    out: dict[str, Any] = {name: stamp_of(r.settings(name)) for name in reads}
    out.update({k: getattr(r.config, k) for k in options})
    if step in ("prune", "export"):  # the steps that read the unpruned model
        out.update(model=file_digest(checkpoint_file(r.model)), weights=file_digest(r.weights), data=r.data.spec)
    if step == "prune":
        out.update(policy=stamp_of(r.policy.to_dict()), criterion=r.config.criterion or r.policy.criterion)
    if step == "finetune":
        out.update(teacher_precision_stamp(r.config.teacher_precision))
    return out


def clean_leftovers(folder: Path) -> None:
    """Remove what a killed run left half-written in ``folder`` (atomic writes' ``.NAME.*.tmp`` files and the
    bundle's ``.bundle.*`` staging folders): nothing in them was ever a result."""
    for path in [*folder.glob(".*.tmp"), *folder.glob("*/.*.tmp"), *folder.glob(".bundle.*")]:
        log.info("removing leftover %s", path)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

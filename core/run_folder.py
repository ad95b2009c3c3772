"""The run folder: the names of the files every job writes, its one ``config.yaml`` writer, and the recorder base.

A run folder (``runs/<name>/``) is the hand-off between the jobs. Every file name a job writes or reads is a
constant here, so a reader finds the layout in one place::

    config.yaml         the resolved options of the command that made the folder (CONFIG_FILE)
    episodes.jsonl      one line per evaluated candidate, agents and Optuna alike (EPISODES_FILE)
    best_policy.yaml    the best candidate so far (BEST_POLICY_FILE)
    groups.json         output channels per prunable group (GROUPS_FILE)
    study.yaml          the Optuna study's name, storage and objectives (STUDY_FILE)
    tensorboard/        TensorBoard events (TENSORBOARD_DIR)
    best.pt / last.pt   training checkpoints; metrics.jsonl their per-epoch metrics
    model.pt            a saved prunegym model
    replay/             the replay of the best policy; replay/bundle/ the deployable folder
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from prunegym.core.config import config_to_dict
from prunegym.core.errors import UserError
from prunegym.core.io import write_yaml

__all__ = [
    "BEST_CHECKPOINT",
    "BEST_POLICY_FILE",
    "CONFIG_FILE",
    "EPISODES_FILE",
    "GROUPS_FILE",
    "LAST_CHECKPOINT",
    "METRICS_FILE",
    "MODEL_FILE",
    "STUDY_FILE",
    "TENSORBOARD_DIR",
    "WRITTEN_KEYS",
    "RunRecorder",
    "prepare_run_dir",
    "read_run_config",
    "refuse_existing_run",
    "write_run_config",
]

log = logging.getLogger(__name__)

CONFIG_FILE = "config.yaml"
WRITTEN_KEYS = ("command", "method")  # what config.yaml records beside the options
EPISODES_FILE = "episodes.jsonl"
BEST_POLICY_FILE = "best_policy.yaml"
GROUPS_FILE = "groups.json"
STUDY_FILE = "study.yaml"
TENSORBOARD_DIR = "tensorboard"
BEST_CHECKPOINT = "best.pt"
LAST_CHECKPOINT = "last.pt"
METRICS_FILE = "metrics.jsonl"
MODEL_FILE = "model.pt"


def _config_mapping(config: Any) -> dict[str, Any]:
    return dict(config) if isinstance(config, Mapping) else config_to_dict(config)


def write_run_config(run_dir: Path | str, *, command: str, config: Any) -> Path:
    """Write ``run_dir/config.yaml`` (atomically): ``command`` first, then the resolved options.

    Args:
        run_dir: the run folder (created if needed).
        command: the command that made the folder (``agent train``, ``optuna run`` ...).
        config: a config dataclass (nested ones are flattened) or a mapping of option to value.

    Returns:
        The path written.
    """
    return write_yaml(Path(run_dir) / CONFIG_FILE, {"command": command, **_config_mapping(config)})


def read_run_config(run_dir: Path | str) -> dict[str, Any]:
    """The options in ``run_dir/config.yaml`` (empty when there is none).

    Raises:
        UserError: the file is not a YAML mapping.
    """
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path} is not valid YAML; restore it or start a new run folder") from exc
    if not isinstance(data, dict):
        raise UserError(f"{path} must be a mapping of option: value; restore it or start a new run folder")
    return data


def refuse_existing_run(run_dir: Path | str, *, resume: bool, markers: Sequence[str] = (CONFIG_FILE,)) -> None:
    """Refuse a folder that already holds a run (one of ``markers`` exists) unless ``resume``.

    Raises:
        UserError: naming ``--resume`` and ``--out`` as the two ways out.
    """
    if not resume and any((Path(run_dir) / m).exists() for m in markers):
        raise UserError(
            f"run folder {run_dir} already holds a run; pass --resume to continue it or choose another --out"
        )


def prepare_run_dir(
    out: Path | str, *, config: Any, resume: bool, command: str, markers: Sequence[str] = (CONFIG_FILE,)
) -> Path:
    """Create the run folder and write the resolved ``config.yaml``.

    An existing run folder is never overwritten silently: without ``resume`` that is an error; with it, options
    that changed since the folder was made are logged.

    Args:
        out: the run folder.
        config: a config dataclass or a mapping of option to value.
        resume: continue a run already in ``out``.
        command: the command that made the folder.
        markers: files whose presence means the folder holds a run.

    Raises:
        UserError: ``out`` holds a run and ``resume`` is false.
    """
    run_dir = Path(out)
    values = {"command": command, **_config_mapping(config)}
    refuse_existing_run(run_dir, resume=resume, markers=markers)
    if (run_dir / CONFIG_FILE).exists():
        old = read_run_config(run_dir)
        changed = sorted(k for k in values if old.get(k) != values[k])
        if changed:
            log.warning("resuming %s with changed options: %s", run_dir, ", ".join(changed))
    write_run_config(run_dir, command=command, config={k: v for k, v in values.items() if k != "command"})
    return run_dir


class RunRecorder:
    """What the search recorders share: the run folder, the best record, progress and a TensorBoard writer.

    :class:`~prunegym.core.records.EpisodeRecorder` (agents, random search) and the Optuna study's
    ``TrialRecorder`` both derive from it, so both write the same kinds of TensorBoard scalars and close alike.

    Args:
        run_dir: the run folder.
        total: the evaluation budget, for ``progress``.
        tensorboard: write TensorBoard events under ``run_dir/tensorboard/<tensorboard_dir>``.
        tensorboard_dir: the events' sub-folder (``search``, ``optuna``).
        purge_step: on resume, the first step whose old events TensorBoard should hide.
    """

    def __init__(
        self,
        *,
        run_dir: Path,
        total: int,
        tensorboard: bool,
        tensorboard_dir: str,
        purge_step: int | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.total = total
        self.best: Mapping[str, Any] | None = None
        self._writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.run_dir / TENSORBOARD_DIR / tensorboard_dir), purge_step=purge_step)

    @property
    def best_reward(self) -> float | None:
        """The best record's reward (``None`` before any finished, feasible record)."""
        return None if self.best is None else float(self.best["reward"])

    def write_scalars(self, scalars: Mapping[str, Any], *, step: int, ratios: Sequence[float], ratios_tag: str) -> None:
        """Write the finite numeric ``scalars`` and a histogram of the policy's ``ratios`` at ``step``; flush."""
        if self._writer is None:
            return
        for tag, value in scalars.items():
            if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
                self._writer.add_scalar(tag, float(value), global_step=step)
        values = np.asarray(list(ratios), dtype=np.float64)
        if values.size:
            self._writer.add_histogram(ratios_tag, values, global_step=step)
        self._writer.flush()

    def close(self) -> None:
        """Flush and close the TensorBoard writer (idempotent)."""
        if self._writer is not None:
            self._writer.flush()
            self._writer.close()
            self._writer = None

"""Sensitivity analysis (``prunegym ana``, as Vitis-AI's ``vai_p ana``): every prunable group × ratio.

Each cell prunes ONE group by one ratio (the others intact), re-estimates BatchNorm statistics and scores top-1
on the val split carved from the training set; this is :class:`prunegym.env.evaluator.Evaluator`'s loop, reused.
The baseline is the unpruned model through the same evaluator (BN re-calibrated too), so a cell's *drop* is the
effect of pruning alone.

Resumable: every result is appended to ``ana.jsonl`` as soon as it is computed, tagged with a key of the settings
that change the numbers (model, weights, data, val split, BN images, criterion, round_to, seed); a rerun skips
the cells already there under the same key. A ratio that would leave a group with no channel is recorded as
not applicable (``accuracy: null``). Outputs: ``ana.csv``, ``ana.json``, ``ana.md`` (the table in the layout of
the Vitis-AI ResNet-50 sensitivity table: rows = layers, columns = baseline, -10% … -90%) and the heatmap.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prunegym.core.errors import UserError
from prunegym.core.io import append_jsonl, atomic_write_text, read_jsonl, write_json
from prunegym.core.policy import PolicyError
from prunegym.core.pruning import block_groups
from prunegym.env.evaluator import Evaluator

log = logging.getLogger(__name__)

ANA_JSONL = "ana.jsonl"
ANA_JSON = "ana.json"
ANA_CSV = "ana.csv"
ANA_MD = "ana.md"
HEATMAP = "ana_heatmap.png"
BASELINE = ""  # the group name of the baseline record


def settings_key(settings: Mapping[str, Any]) -> str:
    """A short stable hash of the settings that change the numbers.

    Args:
        settings: the settings (JSON-serializable, or rendered with ``str``).

    Returns:
        12 hex digits.
    """
    text = json.dumps(dict(settings), sort_keys=True, default=str)
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:12]


def ratio_label(ratio: float) -> str:
    """The column header of a ratio in the Vitis-AI table: ``0.1`` → ``-10%``.

    Args:
        ratio: the fraction of a group's channels removed.

    Returns:
        The label.
    """
    return f"-{100 * ratio:g}%"


@dataclass(frozen=True)
class Sensitivity:
    """Val top-1 (percent) of each group pruned alone at each ratio; ``None`` where the ratio is not applicable."""

    model: str
    baseline: float
    ratios: tuple[float, ...]
    groups: tuple[str, ...]
    accuracy: Mapping[str, tuple[float | None, ...]]
    macs: Mapping[str, tuple[int | None, ...]]
    base_macs: int
    base_params: int
    settings: Mapping[str, Any] = field(default_factory=dict)
    removal: Mapping[str, float | None] = field(default_factory=dict)  # group → top-1 with its residual block removed

    def drop(self, group: str, index: int) -> float | None:
        """Accuracy loss in points of ``group`` at ``ratios[index]`` (negative: it got better).

        Args:
            group: the group name.
            index: the index of the ratio in :attr:`ratios`.

        Returns:
            The drop, or None where the ratio is not applicable.
        """
        acc = self.accuracy[group][index]
        return None if acc is None else self.baseline - acc

    def to_dict(self) -> dict[str, Any]:
        """The JSON record (``ana.json``)."""
        return {
            "model": self.model,
            "baseline": self.baseline,
            "ratios": list(self.ratios),
            "groups": list(self.groups),
            "accuracy": {g: list(v) for g, v in self.accuracy.items()},
            "macs": {g: list(v) for g, v in self.macs.items()},
            "base_macs": self.base_macs,
            "base_params": self.base_params,
            "settings": dict(self.settings),
            "removal": dict(self.removal),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Sensitivity:
        """The result from its :meth:`to_dict` record.

        Args:
            data: the record.

        Returns:
            The result.

        Raises:
            KeyError: a field is missing.
            ValueError: a field does not convert.
        """
        return cls(
            model=str(data["model"]),
            baseline=float(data["baseline"]),
            ratios=tuple(float(r) for r in data["ratios"]),
            groups=tuple(data["groups"]),
            accuracy={g: tuple(None if a is None else float(a) for a in v) for g, v in data["accuracy"].items()},
            macs={g: tuple(None if m is None else int(m) for m in v) for g, v in data["macs"].items()},
            base_macs=int(data["base_macs"]),
            base_params=int(data["base_params"]),
            settings=dict(data.get("settings") or {}),
            removal={g: None if a is None else float(a) for g, a in (data.get("removal") or {}).items()},
        )


@dataclass(frozen=True)
class AnaRun:
    """The result and how many cells were computed now vs reused from ``ana.jsonl``."""

    result: Sensitivity
    computed: int
    reused: int


REMOVE = 1.0  # the "ratio" of a cell that removes the group's residual block


def _cell(evaluator: Evaluator, group: str, ratio: float, block: str | None = None) -> dict[str, Any]:
    """The record of one cell: ``group`` pruned alone by ``ratio`` (the baseline for group ``""``), or its
    residual ``block`` removed."""
    ratios = {group: ratio} if group and block is None else {}
    try:
        ev = evaluator.evaluate(ratios, removed=(block,) if block else ())
    except PolicyError as exc:
        log.info("ana: %s at %s not applicable: %s", group, ratio, exc)
        return {"accuracy": None, "error": str(exc), "cached": False}
    return {
        "accuracy": ev.accuracy,
        "top5": ev.top5,
        "macs": ev.macs,
        "params": ev.params,
        "kept": list(ev.kept),
        "seconds": round(sum(ev.seconds.values()), 3),
        "cached": ev.cached,
    }


def _finished_cells(path: Path, key: str) -> dict[tuple[str, float], dict[str, Any]]:
    """The records in ``path`` computed under settings ``key``, by ``(group, rounded ratio)``; others are logged."""
    done: dict[tuple[str, float], dict[str, Any]] = {}
    stale = 0
    for rec in read_jsonl(path):
        if rec.get("key") == key:
            done[(rec["group"], round(float(rec["ratio"]), 6))] = rec
        else:
            stale += 1
    if stale:
        log.warning("ana: ignoring %d results in %s computed with other settings", stale, path)
    return done


def run_sensitivity(
    *,
    evaluator: Evaluator,
    ratios: Sequence[float],
    out_dir: Path,
    model_name: str,
    settings: Mapping[str, Any],
    progress: Callable[[int, int, str], None] | None = None,
) -> AnaRun:
    """Evaluate the baseline and every group × ratio, appending each result to ``out_dir/ana.jsonl``.

    Args:
        evaluator: scores one policy (BN re-calibration + val top-1).
        ratios: the ratios to analyse.
        out_dir: the run folder.
        model_name: the model's name, recorded in the result.
        settings: the settings that change the numbers (their hash tags every record).
        progress: ``progress(done, total, info)``, called after each cell (reused cells count as done at the
            start).

    Returns:
        The result and how many cells were computed now vs reused.
    """
    out_dir = Path(out_dir)
    key = settings_key(settings)
    path = out_dir / ANA_JSONL
    done = _finished_cells(path, key)
    blocks = {group: block for block, group in block_groups(evaluator.model, evaluator.group_names).items()}
    cells = [(BASELINE, 0.0)] + [(g, float(r)) for g in evaluator.group_names for r in ratios]
    cells += [(g, REMOVE) for g in evaluator.group_names if g in blocks]
    todo = [c for c in cells if (c[0], round(c[1], 6)) not in done]
    reused, computed = len(cells) - len(todo), 0
    if progress is not None:
        progress(reused, len(cells), f"{reused} reused" if reused else "")
    for i, (group, ratio) in enumerate(todo, start=1):
        block = blocks.get(group) if ratio == REMOVE else None
        rec = {"key": key, "group": group, "ratio": ratio, **_cell(evaluator, group, ratio, block)}
        computed += 0 if rec.pop("cached") or rec["accuracy"] is None else 1
        append_jsonl(path, rec)
        done[(group, round(ratio, 6))] = rec
        if progress is not None:
            acc = "n/a" if rec["accuracy"] is None else f"{rec['accuracy']:.2f}%"
            what = "remove block" if block else (ratio_label(ratio) if group else "")
            progress(reused + i, len(cells), f"{group or 'baseline'} {what} {acc}")
    base = done[(BASELINE, 0.0)]
    result = Sensitivity(
        model=model_name,
        baseline=float(base["accuracy"]),
        ratios=tuple(float(r) for r in ratios),
        groups=tuple(evaluator.group_names),
        accuracy={g: tuple(done[(g, round(float(r), 6))]["accuracy"] for r in ratios) for g in evaluator.group_names},
        macs={g: tuple(done[(g, round(float(r), 6))].get("macs") for r in ratios) for g in evaluator.group_names},
        base_macs=int(evaluator.base_macs),
        base_params=int(evaluator.base_params),
        settings={**settings, "key": key},
        removal={g: done[(g, REMOVE)]["accuracy"] for g in evaluator.group_names if g in blocks},
    )
    return AnaRun(result=result, computed=computed, reused=reused)


def load_sensitivity(path: Path | str) -> Sensitivity:
    """The result of ``prunegym ana``.

    Args:
        path: the run folder, or its ``ana.json`` file.

    Returns:
        The result.

    Raises:
        UserError: no finished analysis there, or an unreadable ``ana.json``.
    """
    path = Path(path)
    file = path / ANA_JSON if path.is_dir() else path
    if not file.is_file():
        if (path / ANA_JSONL).is_file():
            raise UserError(f"the ana run in {path} did not finish (no {ANA_JSON}); rerun `prunegym ana --resume`")
        raise UserError(f"--ana {path}: no sensitivity analysis there ({ANA_JSON} missing); run `prunegym ana` first")
    try:
        return Sensitivity.from_dict(json.loads(file.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError) as exc:
        raise UserError(f"cannot read {file}: {exc}; rerun `prunegym ana` into a new folder") from exc


# ----------------------------------------------------------------------------------------------- outputs


def table_rows(result: Sensitivity) -> list[list[str]]:
    """Rows of the Vitis-AI-style table.

    Args:
        result: the analysis.

    Returns:
        One row per group: layer, baseline, accuracy at each ratio (``-`` where not applicable).
    """
    rows = []
    for g in result.groups:
        cells = ["-" if a is None else f"{a:.2f}" for a in result.accuracy[g]]
        if result.removal:
            acc = result.removal.get(g)
            cells.append("-" if acc is None else f"{acc:.2f}")
        rows.append([g, f"{result.baseline:.2f}", *cells])
    return rows


def table_header(result: Sensitivity) -> list[str]:
    """The header of :func:`table_rows`: Layer, Baseline, ``-10%`` … for ``result``'s ratios, and ``Remove`` (the
    group's residual block removed) when the model has removable blocks."""
    return ["Layer", "Baseline", *(ratio_label(r) for r in result.ratios), *(["Remove"] if result.removal else [])]


def markdown_table(result: Sensitivity) -> str:
    """The table of ``result`` as Markdown (``ana.md``)."""
    header = table_header(result)
    lines = [
        f"### Sensitivity of {result.model} (val top-1 %, each layer pruned alone by the ratio of its output channels)",
        "",
        "| " + " | ".join(header) + " |",
        "|---|" + "---:|" * (len(header) - 1),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in table_rows(result)]
    return "\n".join(lines) + "\n"


def csv_text(result: Sensitivity) -> str:
    """``ana.csv``: one row per group × ratio with accuracy, drop, MACs and MAC ratio (empty where n/a)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["group", "ratio", "accuracy", "drop", "macs", "macs_ratio"])
    for g in result.groups:
        for i, r in enumerate(result.ratios):
            acc, macs, drop = result.accuracy[g][i], result.macs[g][i], result.drop(g, i)
            writer.writerow(
                [
                    g,
                    r,
                    "" if acc is None else f"{acc:.4f}",
                    "" if drop is None else f"{drop:.4f}",
                    "" if macs is None else macs,
                    "" if macs is None else f"{macs / result.base_macs:.6f}",
                ]
            )
    return buf.getvalue()


def write_outputs(result: Sensitivity, out_dir: Path) -> dict[str, Path]:
    """Write ``ana.json``, ``ana.csv``, ``ana.md`` and the heatmap PNG, each atomically.

    Args:
        result: the analysis.
        out_dir: the run folder.

    Returns:
        The paths, by kind (``json``, ``csv``, ``md``, ``heatmap``).
    """
    from prunegym.workflow.plots import sensitivity_heatmap

    out_dir = Path(out_dir)
    return {
        "json": write_json(out_dir / ANA_JSON, result.to_dict()),
        "csv": atomic_write_text(out_dir / ANA_CSV, csv_text(result)),
        "md": atomic_write_text(out_dir / ANA_MD, markdown_table(result)),
        "heatmap": sensitivity_heatmap(result, out_dir / HEATMAP),
    }

"""The DeePhi/Vitis-AI summary table every workflow command prints: Accuracy / Weights / Operations, Baseline vs
Compressed vs Delta.

Weights count every parameter; Operations is DeePhi's figure, ``2 · MACs + bias additions`` of Conv2d/Linear
layers (:attr:`prunegym.core.stats.ModelStats.ops_deephi`). With ``convention="deephi"`` both follow the Vitis-AI
tutorial (Linear layers not counted; BatchNorm vectors counted), print as exact integers, and the deltas as signed
fractions, as the tutorial's table does. The accuracy delta is in percentage points (both
accuracies are percents); the weights and operations deltas are relative changes in percent.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from rich.table import Table
from torch import nn

from prunegym.core.stats import ModelStats, model_stats


def human(n: float) -> str:
    """A count as the DeePhi tools print it: ``1234567`` → ``1.23M`` (K, M, G).

    Args:
        n: the count.

    Returns:
        The label.
    """
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f}{unit}"
    return f"{n:.0f}"


def _fraction(base: float, new: float) -> str:
    """The change as a signed fraction, as the DeePhi tutorial's table prints it (``-0.097``)."""
    return f"{(new - base) / base:+.3f}" if base else "n/a"


def _relative(base: float, new: float) -> str:
    """The relative change in percent, signed (``n/a`` for a zero base)."""
    return f"{100.0 * (new - base) / base:+.2f}%" if base else "n/a"


@dataclass(frozen=True)
class Summary:
    """Baseline and compressed figures of one compression step. Accuracies are top-1 percents (None: not measured)."""

    baseline_params: int
    compressed_params: int
    baseline_ops: int
    compressed_ops: int
    baseline_macs: int
    compressed_macs: int
    baseline_accuracy: float | None = None
    compressed_accuracy: float | None = None
    accuracy_note: str = ""
    convention: str = "prunegym"  # deephi: exact integers and deltas as fractions
    baseline_top5: float | None = None
    compressed_top5: float | None = None

    @classmethod
    def from_dict(cls, record: dict[str, Any]) -> Summary:
        """The summary a :meth:`to_dict` record holds."""
        return cls(**{k: v for k, v in record.items() if k in cls.__dataclass_fields__})

    @property
    def ops_reduction(self) -> float:
        """Fraction of the operations removed (0.3 = -30%)."""
        return 1.0 - self.compressed_ops / self.baseline_ops if self.baseline_ops else 0.0

    @property
    def params_reduction(self) -> float:
        """Fraction of the weights removed (0.3 = -30%)."""
        return 1.0 - self.compressed_params / self.baseline_params if self.baseline_params else 0.0

    def rows(self) -> list[tuple[str, str, str, str]]:
        """``(metric, baseline, compressed, delta)`` rows, formatted."""
        b, c = self.baseline_accuracy, self.compressed_accuracy
        acc = (
            "Accuracy",
            "n/a" if b is None else f"{b:.2f}%",
            "n/a" if c is None else f"{c:.2f}%",
            f"{round(c - b, 2) + 0.0:+.2f} pt" if b is not None and c is not None else "n/a",
        )
        rows = [acc]
        b5, c5 = self.baseline_top5, self.compressed_top5
        if b5 is not None or c5 is not None:
            rows.append(
                (
                    "Top-5",
                    "n/a" if b5 is None else f"{b5:.2f}%",
                    "n/a" if c5 is None else f"{c5:.2f}%",
                    f"{round(c5 - b5, 2) + 0.0:+.2f} pt" if b5 is not None and c5 is not None else "n/a",
                )
            )
        exact = self.convention == "deephi"
        count, delta = (str, _fraction) if exact else (human, _relative)
        for name, base, new in (
            ("Weights", self.baseline_params, self.compressed_params),
            ("Operations", self.baseline_ops, self.compressed_ops),
        ):
            rows.append((name, count(base), count(new), delta(base, new)))
        return rows

    def table(self, *, title: str = "Summary") -> Table:
        """The summary as a rich table (the CLI prints it).

        Args:
            title: the table title.

        Returns:
            The table.
        """
        table = Table(title=title)
        table.add_column("Metric")
        for col in ("Baseline", "Compressed", "Delta" if self.convention == "deephi" else "Delta %"):
            table.add_column(col, justify="right")
        for row in self.rows():
            table.add_row(*row)
        return table

    def markdown(self, *, title: str = "Summary") -> str:
        """The summary as Markdown (``summary.md``), with the accuracy note below the table.

        Args:
            title: the heading.

        Returns:
            The Markdown text.
        """
        delta = "Delta" if self.convention == "deephi" else "Delta %"
        lines = [f"### {title}", "", f"| Metric | Baseline | Compressed | {delta} |", "|---|---:|---:|---:|"]
        lines += [f"| {' | '.join(row)} |" for row in self.rows()]
        if self.accuracy_note:
            lines += ["", self.accuracy_note]
        return "\n".join(lines) + "\n"

    def to_dict(self) -> dict[str, Any]:
        """The JSON record (``summary.json``), with the two reductions."""
        out = asdict(self)
        out["ops_reduction"] = round(self.ops_reduction, 6)
        out["params_reduction"] = round(self.params_reduction, 6)
        return out


def summarize(
    *,
    baseline: nn.Module | ModelStats,
    compressed: nn.Module | ModelStats,
    input_shape: tuple[int, int, int],
    baseline_accuracy: float | None = None,
    compressed_accuracy: float | None = None,
    accuracy_note: str = "",
    convention: str = "prunegym",
    baseline_top5: float | None = None,
    compressed_top5: float | None = None,
) -> Summary:
    """The :class:`Summary` of two models (or their precomputed :class:`ModelStats`).

    Args:
        baseline: the model before the step, or its stats.
        compressed: the model after the step, or its stats.
        input_shape: ``(C, H, W)`` of one input (for models given as modules).
        baseline_accuracy: top-1 percent of the baseline (None: not measured).
        compressed_accuracy: top-1 percent of the compressed model (None: not measured).
        accuracy_note: how the accuracies were measured.
        convention: ``prunegym`` (every parameter; Conv2d+Linear operations) or ``deephi`` (the tutorial's
            counts, :data:`prunegym.core.stats.CONVENTIONS`, printed as exact integers with fractional deltas).
        baseline_top5: top-5 percent of the baseline (None: not shown).
        compressed_top5: top-5 percent of the compressed model (None: not shown).

    Returns:
        The summary.
    """
    b = baseline if isinstance(baseline, ModelStats) else model_stats(baseline, input_shape=input_shape)
    c = compressed if isinstance(compressed, ModelStats) else model_stats(compressed, input_shape=input_shape)
    return Summary(
        baseline_params=b.weights(convention),
        compressed_params=c.weights(convention),
        baseline_ops=b.operations(convention),
        compressed_ops=c.operations(convention),
        baseline_macs=b.macs,
        compressed_macs=c.macs,
        baseline_accuracy=baseline_accuracy,
        compressed_accuracy=compressed_accuracy,
        accuracy_note=accuracy_note,
        convention=convention,
        baseline_top5=baseline_top5,
        compressed_top5=compressed_top5,
    )

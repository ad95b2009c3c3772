"""The DeePhi/Vitis-AI summary table every workflow command prints: Accuracy / Weights / Operations, Baseline vs
Compressed vs Delta.

Weights count every parameter; Operations is DeePhi's figure, ``2 · MACs + bias additions`` of Conv2d/Linear
layers (:attr:`prunegym.core.stats.ModelStats.ops_deephi`). The accuracy delta is in percentage points (both
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
        return [
            acc,
            (
                "Weights",
                human(self.baseline_params),
                human(self.compressed_params),
                _relative(self.baseline_params, self.compressed_params),
            ),
            (
                "Operations",
                human(self.baseline_ops),
                human(self.compressed_ops),
                _relative(self.baseline_ops, self.compressed_ops),
            ),
        ]

    def table(self, *, title: str = "Summary") -> Table:
        """The summary as a rich table (the CLI prints it).

        Args:
            title: the table title.

        Returns:
            The table.
        """
        table = Table(title=title)
        table.add_column("Metric")
        for col in ("Baseline", "Compressed", "Delta %"):
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
        lines = [f"### {title}", "", "| Metric | Baseline | Compressed | Delta % |", "|---|---:|---:|---:|"]
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
) -> Summary:
    """The :class:`Summary` of two models (or their precomputed :class:`ModelStats`).

    Args:
        baseline: the model before the step, or its stats.
        compressed: the model after the step, or its stats.
        input_shape: ``(C, H, W)`` of one input (for models given as modules).
        baseline_accuracy: top-1 percent of the baseline (None: not measured).
        compressed_accuracy: top-1 percent of the compressed model (None: not measured).
        accuracy_note: how the accuracies were measured.

    Returns:
        The summary.
    """
    b = baseline if isinstance(baseline, ModelStats) else model_stats(baseline, input_shape=input_shape)
    c = compressed if isinstance(compressed, ModelStats) else model_stats(compressed, input_shape=input_shape)
    return Summary(
        baseline_params=b.params,
        compressed_params=c.params,
        baseline_ops=b.ops_deephi,
        compressed_ops=c.ops_deephi,
        baseline_macs=b.macs,
        compressed_macs=c.macs,
        baseline_accuracy=baseline_accuracy,
        compressed_accuracy=compressed_accuracy,
        accuracy_note=accuracy_note,
    )

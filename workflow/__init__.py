"""prunegym.workflow: the classic Vitis-AI/DeePhi workflow (``ana``, ``prune``, ``transform``, ``iterate``).

What lives where:

- :mod:`.configs`: the commands' options (:class:`AnaConfig`, :class:`PruneConfig`, :class:`TransformConfig`,
  :class:`IterateConfig`), saved as each run's ``config.yaml``;
- :mod:`.sensitivity`: ``ana``, every prunable group × ratio scored alone (:func:`run_sensitivity`), resumable;
- :mod:`.prune_plan`: per-group ratios from an ``ana`` result by ``--rate`` or ``--threshold``;
- :mod:`.prune`: :func:`prune_model` (dense or masked) and :func:`save_pruned`;
- :mod:`.loading`: :func:`load_masked_model`, the input of ``transform`` (the transform itself is
  :func:`prunegym.core.pruning.transform`);
- :mod:`.iterate`: :func:`iterate_rounds`, the prune → finetune loop with composed policies;
- :mod:`.tracing`: :func:`traced_cost_table`, one-line errors for models the engine cannot trace;
- :mod:`.evaluation`: val top-1, BatchNorm re-calibration and calibration batches;
- :mod:`.summary`: the DeePhi summary table (Accuracy / Weights / Operations);
- :mod:`.plots`: the sensitivity heatmap and the rounds plot;
- Deep Compression (``compress``): :mod:`.fine_grained` (magnitude masks, AGP, :class:`MaskKeeper`),
  :mod:`.weight_sharing` (k-means per layer, centroid finetune), :mod:`.compress` (the resumable pipeline) and
  :mod:`.compress_config` (:class:`CompressConfig`); the ``.dc`` codec itself is :mod:`prunegym.core.dc_format`.

It builds on :mod:`prunegym.core` (the pruning engine) and :mod:`prunegym.env` (the evaluator); the CLI drives it.
Names are imported lazily, so that importing one module (e.g. the configs) does not pull in matplotlib.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from prunegym.core.lazy import lazy_attributes

if TYPE_CHECKING:
    from prunegym.workflow.compress import compress
    from prunegym.workflow.compress_config import CompressConfig
    from prunegym.workflow.configs import AnaConfig, IterateConfig, PruneConfig, TransformConfig
    from prunegym.workflow.evaluation import calib_batches, recalibrated, val_accuracy
    from prunegym.workflow.fine_grained import MaskKeeper, agp_sparsity, magnitude_masks
    from prunegym.workflow.iterate import RoundResult, check_finished_rounds, iterate_rounds
    from prunegym.workflow.loading import load_masked_model
    from prunegym.workflow.plots import rounds_plot, sensitivity_heatmap
    from prunegym.workflow.prune import PruneResult, prune_model, save_pruned
    from prunegym.workflow.prune_plan import Plan, plan_for_rate, plan_for_threshold
    from prunegym.workflow.sensitivity import AnaRun, Sensitivity, load_sensitivity, run_sensitivity, write_outputs
    from prunegym.workflow.summary import Summary, summarize
    from prunegym.workflow.tracing import traced_cost_table
    from prunegym.workflow.weight_sharing import finetune_centroids, share_weights

_WHERE = {
    "CompressConfig": "compress_config",
    "MaskKeeper": "fine_grained",
    "agp_sparsity": "fine_grained",
    "compress": "compress",
    "finetune_centroids": "weight_sharing",
    "magnitude_masks": "fine_grained",
    "share_weights": "weight_sharing",
    "AnaConfig": "configs",
    "AnaRun": "sensitivity",
    "IterateConfig": "configs",
    "Plan": "prune_plan",
    "PruneConfig": "configs",
    "PruneResult": "prune",
    "RoundResult": "iterate",
    "Sensitivity": "sensitivity",
    "Summary": "summary",
    "TransformConfig": "configs",
    "calib_batches": "evaluation",
    "check_finished_rounds": "iterate",
    "iterate_rounds": "iterate",
    "load_masked_model": "loading",
    "load_sensitivity": "sensitivity",
    "plan_for_rate": "prune_plan",
    "plan_for_threshold": "prune_plan",
    "prune_model": "prune",
    "recalibrated": "evaluation",
    "rounds_plot": "plots",
    "run_sensitivity": "sensitivity",
    "save_pruned": "prune",
    "sensitivity_heatmap": "plots",
    "summarize": "summary",
    "traced_cost_table": "tracing",
    "val_accuracy": "evaluation",
    "write_outputs": "sensitivity",
}
__all__ = [
    "AnaConfig",
    "AnaRun",
    "CompressConfig",
    "IterateConfig",
    "MaskKeeper",
    "Plan",
    "PruneConfig",
    "PruneResult",
    "RoundResult",
    "Sensitivity",
    "Summary",
    "TransformConfig",
    "agp_sparsity",
    "calib_batches",
    "check_finished_rounds",
    "compress",
    "finetune_centroids",
    "iterate_rounds",
    "load_masked_model",
    "load_sensitivity",
    "magnitude_masks",
    "plan_for_rate",
    "plan_for_threshold",
    "prune_model",
    "recalibrated",
    "rounds_plot",
    "run_sensitivity",
    "save_pruned",
    "sensitivity_heatmap",
    "share_weights",
    "summarize",
    "traced_cost_table",
    "val_accuracy",
    "write_outputs",
]


__getattr__ = lazy_attributes(__name__, _WHERE)

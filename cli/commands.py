"""The command registry: every top-level command, the ``cli`` module that registers it and its one-line help.

Torch-free and import-free on purpose: ``prunegym --help``, ``--version`` and argument errors are answered from
this table alone, and running a command imports only the module of its family (:func:`~prunegym.cli.main.main`).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["CONFIG_BACKED", "REGISTRY", "CommandFamily", "command_help", "family_of"]

# the attribute set on a command's parser whose options come from a config dataclass (it reads --config itself)
CONFIG_BACKED = "prunegym_config_backed"


@dataclass(frozen=True)
class CommandFamily:
    """A ``cli`` module and the top-level commands its ``register(subparsers)`` adds.

    Args:
        module: the module's import name.
        commands: ``(name, one-line help)`` of each top-level command it registers (named here so that they
            show in ``--help`` without importing it, and even when it cannot load).
    """

    module: str
    commands: tuple[tuple[str, str], ...]

    @property
    def names(self) -> tuple[str, ...]:
        """The command names."""
        return tuple(name for name, _ in self.commands)


REGISTRY: tuple[CommandFamily, ...] = (
    CommandFamily(
        "prunegym.cli.model",
        (
            ("stat", "per-layer MACs, params and output sizes, with totals"),
            ("eval", "top-1/top-5 accuracy on a split (the test split by default)"),
            ("train", "train a model (SGD, cosine LR, warm-up, optional distillation)"),
            ("finetune", "finetune trained or pruned weights (low LR; optional distillation)"),
        ),
    ),
    CommandFamily(
        "prunegym.cli.workflow",
        (
            ("ana", "sensitivity analysis: val top-1 of every prunable group at every ratio (resumable)"),
            ("prune", "prune by --rate or --threshold with ratios from ana, --uniform, or --policy"),
            ("transform", "masked/sparse model (ours or torch.nn.utils.prune) → dense smaller model"),
            ("iterate", "DeePhi loop: prune to a growing rate, finetune, repeat (resumable)"),
        ),
    ),
    CommandFamily(
        "prunegym.cli.compress",
        (
            (
                "compress",
                "Deep Compression: fine-grained AGP pruning, weight sharing, Huffman-coded .dc file (resumable)",
            ),
        ),
    ),
    CommandFamily(
        "prunegym.cli.demo",
        (("demo", "the whole pipeline on the embedded default (ResNet-20 on 32×32 digits): no downloads, no flags"),),
    ),
    CommandFamily("prunegym.cli.env", (("env", "drive the pruning environment with baseline agents"),)),
    CommandFamily("prunegym.cli.latency", (("latency", "build and check the predicted-latency lookup table"),)),
    CommandFamily("prunegym.cli.agent", (("agent", "train the AMC-style search agent; show a search run"),)),
    CommandFamily(
        "prunegym.cli.search",
        (
            ("optuna", "Optuna baseline: search per-group pruning ratios (TPE, NSGA-II/III, multi-objective TPE)"),
            ("compare", "one table and one plot (best reward vs evaluations) across agent and Optuna runs"),
        ),
    ),
    CommandFamily(
        "prunegym.cli.replay",
        (("replay", "replay a policy: finetune, transform, ONNX, INT8, verify, benchmark, bundle"),),
    ),
    CommandFamily(
        "prunegym.cli.deploy", (("deploy", "use a bundle with ONNX Runtime alone: classify images, re-benchmark"),)
    ),
    CommandFamily(
        "prunegym.cli.device",
        (("device", "a remote latency worker on the target device (serve) and the registered devices (list)"),),
    ),
)


def command_help(name: str) -> str:
    """The one-line help of top-level command ``name``."""
    for family in REGISTRY:
        for command, text in family.commands:
            if command == name:
                return text
    raise KeyError(name)


def family_of(name: str) -> CommandFamily | None:
    """The family that registers top-level command ``name`` (None for an unknown name)."""
    return next((f for f in REGISTRY if name in f.names), None)

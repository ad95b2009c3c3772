"""The input of ``transform``: models whose weights may hold ``torch.nn.utils.prune`` masks."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from prunegym.core.checkpoint import (
    CHECKPOINT_FORMAT,
    MODEL_FORMAT,
    extract_state_dict,
    load_model,
    load_weights,
    read_checkpoint,
    rebuild_model,
)
from prunegym.core.errors import UserError
from prunegym.core.pruning import merge_prune_masks


def load_masked_model(
    model: str, *, weights: str | None = None, num_classes: int = 10, in_channels: int = 3
) -> nn.Module:
    """A model whose weights may hold ``torch.nn.utils.prune`` reparametrizations (``weight_orig``/``weight_mask``).

    Masks are merged (``weight = weight_orig * weight_mask``).

    Args:
        model: a zoo name/factory (with ``weights``), or a saved prunegym model or training checkpoint.
        weights: weights for a zoo model.
        num_classes: classes of a zoo model.
        in_channels: input channels of a zoo model.

    Returns:
        The model.

    Raises:
        UserError: a saved model given with ``weights``, a file that is not a prunegym model, or ``weights`` that
            hold a pruned model.
    """
    if ("/" in model or model.endswith((".pt", ".pth")) or Path(model).is_dir()) and ":" not in model:
        if weights is not None:
            raise UserError(f"{model} is a saved model; pass it alone as --model, without --weights")
        obj = read_checkpoint(model)
        if obj.get("format") not in (MODEL_FORMAT, CHECKPOINT_FORMAT):
            raise UserError(f"{model} is not a prunegym model; use --model NAME --weights {model}")
        merged = merge_prune_masks(extract_state_dict(obj, source=model))
        return rebuild_model({**obj, "state_dict": merged}, source=model)
    net = load_model(model, num_classes=num_classes, in_channels=in_channels)
    if weights is not None:
        obj = read_checkpoint(weights)
        if obj.get("policy"):
            raise UserError(f"{weights} holds a pruned model; pass it as --model {weights} (no --weights)")
        load_weights(net, merge_prune_masks(extract_state_dict(obj, source=weights)), source=weights)
    return net

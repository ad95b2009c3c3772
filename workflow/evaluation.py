"""What the workflow measures on a dataset: val top-1, BatchNorm re-calibration, calibration batches."""

from __future__ import annotations

import torch
from torch import nn

from prunegym.core.data import DataSplits, iterate_batches
from prunegym.core.errors import UserError
from prunegym.core.evaluate import evaluate, input_norm, recalibrate_bn
from prunegym.core.pruning import NEEDS_CALIB


def calib_batches(
    model: nn.Module, data: DataSplits | None, *, criterion: str, batches: int = 4, seed: int = 0
) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """Seeded batches of 64 training images for the data-driven criteria (taylor, lsq).

    Args:
        model: the model (its input normalization is used).
        data: the dataset (None: no data given).
        criterion: the channel-selection criterion.
        batches: number of batches.
        seed: seeds the shuffle.

    Returns:
        ``[(x, y), ...]``, or None for the criteria that need no data.

    Raises:
        UserError: a data-driven criterion without ``data``.
    """
    if criterion not in NEEDS_CALIB:
        return None
    if data is None:
        raise UserError(f"criterion '{criterion}' needs training images; pass --data SPEC or use --criterion l1")
    mean, std = input_norm(model, mean=data.mean, std=data.std)
    g = torch.Generator().manual_seed(seed + 17)
    return list(
        iterate_batches(
            data.train_x, data.train_y, batch_size=64, mean=mean, std=std, shuffle=True, generator=g, limit=64 * batches
        )
    )


def val_accuracy(model: nn.Module, data: DataSplits, *, batch_size: int = 500) -> float:
    """Top-1 (percent) on the val split, which is carved from the training set.

    Args:
        model: the model.
        data: the dataset.
        batch_size: images per batch.

    Returns:
        The top-1 accuracy in percent.
    """
    mean, std = input_norm(model, mean=data.mean, std=data.std)
    return evaluate(model, data.val_x, data.val_y, mean=mean, std=std, batch_size=batch_size).top1


def recalibrated(model: nn.Module, data: DataSplits, *, images: int, seed: int = 0) -> nn.Module:
    """``model`` with BatchNorm statistics re-estimated on training images, in place.

    Args:
        model: the model.
        data: the dataset (its training split and augmentation are used).
        images: number of training images (0: the model is returned as is).
        seed: seeds the choice of images.

    Returns:
        ``model`` itself.
    """
    if images:
        mean, std = input_norm(model, mean=data.mean, std=data.std)
        recalibrate_bn(model, data.train_x, mean=mean, std=std, num_images=images, seed=seed, augment=data.augment)
    return model

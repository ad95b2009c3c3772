"""Helpers shared by the pruning tests (imported as a plain module: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import torch
from torch import nn

from prunegym.core.models import build_model

CIFAR = (3, 32, 32)


def calibrated(name: str, *, shape: tuple[int, int, int] = CIFAR, seed: int = 0) -> nn.Module:
    """A zoo model with random BN affine parameters and BN statistics estimated on random inputs (eval mode),
    so activations neither vanish nor explode and channels differ in importance."""
    torch.manual_seed(seed)
    model = build_model(name, in_channels=shape[0])
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            nn.init.uniform_(m.weight, 0.5, 1.5)
            nn.init.normal_(m.bias, 0.0, 0.1)
            m.reset_running_stats()
            m.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.randn(32, *shape))
    return model.eval()

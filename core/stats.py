"""Analytic model statistics: per-layer MACs, parameters and output sizes.

Convention: MACs count the multiply-accumulates of Conv2d and Linear layers only,
``MACs(conv) = C_out · (C_in / groups) · k_h · k_w · H_out · W_out`` and ``MACs(linear) = in · out``;
BatchNorm, activations, pooling, residual additions and bias additions are not counted. Parameters count
every parameter of the model (BatchNorm affine weights included). ``ops_deephi`` is DeePhi/Vitis-AI's
"operations" figure, ``2 · MACs + bias additions`` (one per output element of a layer with bias).

The ``deephi`` convention (:data:`CONVENTIONS`) reproduces the figures of the Vitis-AI/DeePhi CIFAR-10 tutorial's
summaries, whose pruner only touches convolutions: **Operations** = ``2 · MACs + bias additions`` of the Conv2d
layers only (miniVGGNet: 49,053,696), **Weights** = every stored element of every module except the Linear
layers, i.e. convolution weights and biases plus BatchNorm's four per-channel vectors (scale, shift, running mean
and variance) and its one step counter (miniVGGNet: 65,568 + 772 + 2,049 = 68,389, exactly the tutorial's figure;
the dense layers' 2,102,282 parameters are not counted).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from prunegym.core.models import PadShortcutConv


@dataclass(frozen=True)
class LayerStat:
    name: str
    type: str
    in_channels: int
    out_channels: int
    output_size: tuple[int, ...]
    macs: int
    params: int
    bias_adds: int
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    groups: int = 1


CONVENTIONS = {
    "prunegym": "MACs of Conv2d+Linear (bias, BN, pooling not counted); ops_deephi = 2*MACs + bias adds",
    "deephi": "DeePhi/Vitis-AI: weights = all stored elements except Linear layers (conv weights+biases, BN "
    "scale/shift/mean/var/counter); operations = 2*MACs + bias adds of Conv2d layers only",
}


@dataclass(frozen=True)
class ModelStats:
    params: int
    macs: int
    ops_deephi: int
    layers: tuple[LayerStat, ...]
    deephi_weights: int = 0
    deephi_ops: int = 0

    def weights(self, convention: str = "prunegym") -> int:
        """The weight count under ``convention`` (:data:`CONVENTIONS`)."""
        return self.deephi_weights if _checked(convention) == "deephi" else self.params

    def operations(self, convention: str = "prunegym") -> int:
        """The operation count under ``convention`` (:data:`CONVENTIONS`)."""
        return self.deephi_ops if _checked(convention) == "deephi" else self.ops_deephi

    def to_dict(self, convention: str = "prunegym") -> dict:
        d = asdict(self)
        d["convention"] = CONVENTIONS[_checked(convention)]
        return d


def _checked(convention: str) -> str:
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown counting convention {convention!r}; use one of {', '.join(CONVENTIONS)}")
    return convention


def _deephi_weights(model: nn.Module) -> int:
    """Stored elements (parameters and buffers) of every module except Linear layers and padded shortcuts."""
    total = 0
    for module in model.modules():
        if isinstance(module, nn.Linear | PadShortcutConv):
            continue
        total += sum(p.numel() for p in module.parameters(recurse=False))
        total += sum(b.numel() for b in module.buffers(recurse=False))
    return total


def _layer_stat(name: str, module: nn.Module, out: torch.Tensor) -> LayerStat | None:
    params = sum(p.numel() for p in module.parameters(recurse=False))
    per_sample = out.shape[1:]
    out_elems = int(torch.Size(per_sample).numel())
    has_bias = getattr(module, "bias", None) is not None
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        macs = out_elems * (module.in_channels // module.groups) * kh * kw
        return LayerStat(
            name=name,
            type="Conv2d" if module.groups == 1 else ("DWConv2d" if module.groups == module.in_channels else "GConv2d"),
            in_channels=module.in_channels,
            out_channels=module.out_channels,
            output_size=tuple(int(s) for s in per_sample),
            macs=macs,
            params=params,
            bias_adds=out_elems if has_bias else 0,
            kernel=(kh, kw),
            stride=tuple(module.stride),  # type: ignore[arg-type]
            groups=module.groups,
        )
    if isinstance(module, nn.Linear):
        rows = out_elems // module.out_features
        return LayerStat(
            name=name,
            type="Linear",
            in_channels=module.in_features,
            out_channels=module.out_features,
            output_size=tuple(int(s) for s in per_sample),
            macs=rows * module.in_features * module.out_features,
            params=params,
            bias_adds=out_elems if has_bias else 0,
        )
    return None


@torch.no_grad()
def _shortcut_params(model: nn.Module) -> int:
    """Parameters of rewritten padded shortcuts, which count as the parameter-free shortcut they stand for."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, PadShortcutConv))


def model_stats(model: nn.Module, *, input_shape: tuple[int, int, int]) -> ModelStats:
    """Count MACs and parameters with one forward pass of a zero batch of shape ``(1, *input_shape)``."""
    records: dict[str, LayerStat] = {}
    handles = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d | nn.Linear) and not isinstance(module, PadShortcutConv):

            def hook(mod: nn.Module, _inp: tuple, out: torch.Tensor, name: str = name) -> None:
                stat = _layer_stat(name, mod, out)
                if stat is not None:
                    records[name] = stat

            handles.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        model(torch.zeros(1, *input_shape, device=device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    layers = tuple(records[name] for name, _ in model.named_modules() if name in records)
    macs = sum(layer.macs for layer in layers)
    return ModelStats(
        params=sum(p.numel() for p in model.parameters()) - _shortcut_params(model),
        macs=macs,
        ops_deephi=2 * macs + sum(layer.bias_adds for layer in layers),
        layers=layers,
        deephi_weights=_deephi_weights(model),
        deephi_ops=sum(2 * layer.macs + layer.bias_adds for layer in layers if layer.type != "Linear"),
    )

"""Profiling a layer alone: its context in the model, its shape signature and its one-layer micro graph.

Every conv/linear layer of the model is timed alone, as a tiny ONNX graph: the layer plus the BatchNorm and
activation that follow it in the model, at the layer's input size. Layers of the same shape share their
measurements (ResNet-56's 55 convs are 8 shapes).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from prunegym.core.onnx_export import export_onnx_bytes
from prunegym.core.pruning import LayerCost

__all__ = [
    "LayerContext",
    "export_micro_graph",
    "layer_contexts",
    "layer_signature",
    "micro_graph",
    "signature_key",
]

_ACTIVATIONS = {
    "relu": "relu",
    "relu_": "relu",
    "relu6": "relu6",
    "silu": "silu",
    "silu_": "silu",
    "hardswish": "hardswish",
    "hardswish_": "hardswish",
    "gelu": "gelu",
    "sigmoid": "sigmoid",
    "leaky_relu": "leaky_relu",
    "leaky_relu_": "leaky_relu",
}
_ACTIVATION_MODULES: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "silu": nn.SiLU,
    "hardswish": nn.Hardswish,
    "gelu": nn.GELU,
    "sigmoid": nn.Sigmoid,
    "leaky_relu": nn.LeakyReLU,
}


class _ActivationSpy(TorchFunctionMode):
    """Records which activation function is applied directly to a watched tensor (a conv/BN output)."""

    def __init__(self, watched: dict[int, str], found: dict[str, str]) -> None:
        super().__init__()
        self.watched = watched
        self.found = found

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        act = _ACTIVATIONS.get(name)
        if name == "hardtanh":
            lo = kwargs.get("min_val", args[1] if len(args) > 1 else -1.0)
            hi = kwargs.get("max_val", args[2] if len(args) > 2 else 1.0)
            act = "relu6" if (float(lo), float(hi)) == (0.0, 6.0) else None
        if act is not None and args and isinstance(args[0], torch.Tensor):
            owner = self.watched.get(id(args[0]))
            if owner is not None and owner not in self.found:
                self.found[owner] = act
        return func(*args, **kwargs)


@dataclass(frozen=True)
class LayerContext:
    """A conv/linear layer as it runs in the model.

    Attributes:
        input_shape: its input shape, without the batch dim.
        norm: whether a BatchNorm follows it.
        activation: the activation applied to its (normalized) output, or None.
        module: the layer itself.
    """

    input_shape: tuple[int, ...]
    norm: bool
    activation: str | None
    module: nn.Module = field(compare=False, repr=False)


class _Watch:
    """Forward hooks that record each layer's input shape and follow its output through a BatchNorm."""

    def __init__(self) -> None:
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.watched: dict[int, str] = {}
        self.keep: list[torch.Tensor] = []  # keeps watched tensors alive so their ids stay unique
        self.norms: dict[str, bool] = {}
        self.acts: dict[str, str] = {}

    def layer_hook(self, name: str) -> Callable:
        def hook(_m: nn.Module, inp: tuple, out: Any) -> None:
            if name in self.shapes or not inp or not isinstance(out, torch.Tensor):
                return
            self.shapes[name] = tuple(int(s) for s in inp[0].shape[1:])
            self.watched[id(out)] = name
            self.keep.append(out)

        return hook

    def norm_hook(self, _m: nn.Module, inp: tuple, out: Any) -> None:
        owner = self.watched.get(id(inp[0])) if inp else None
        if owner is not None and isinstance(out, torch.Tensor) and owner not in self.norms:
            self.norms[owner] = True
            self.watched[id(out)] = owner
            self.keep.append(out)


def layer_contexts(model: nn.Module, input_shape: Sequence[int]) -> dict[str, LayerContext]:
    """Input shape, following BatchNorm and following activation of every conv/linear, from one forward pass.

    Args:
        model: the model (run once in eval mode on zeros; its training mode is restored).
        input_shape: C×H×W of one input.

    Returns:
        Layer name → its context, for every conv/linear layer that runs in the forward pass.
    """
    watch = _Watch()
    modules = dict(model.named_modules())
    handles = []
    for name, m in modules.items():
        if isinstance(m, nn.Conv2d | nn.Linear):
            handles.append(m.register_forward_hook(watch.layer_hook(name)))
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            handles.append(m.register_forward_hook(watch.norm_hook))
    training = model.training
    model.eval()
    try:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        with torch.no_grad(), _ActivationSpy(watch.watched, watch.acts):
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(training)
        for h in handles:
            h.remove()
    return {
        n: LayerContext(s, watch.norms.get(n, False), watch.acts.get(n), modules[n]) for n, s in watch.shapes.items()
    }


def layer_signature(la: LayerCost, ctx: LayerContext) -> dict[str, Any]:
    """The shape-defining attributes of a layer but its channel counts; layers with equal ones share timings.

    Args:
        la: the layer's cost entry.
        ctx: the layer's context in the model.

    Returns:
        A JSON-serializable dict (``kind``, kernel, stride, padding, ..., ``input_size``, ``norm``, ``activation``).
    """
    m = ctx.module
    if isinstance(m, nn.Conv2d):
        pad = m.padding if isinstance(m.padding, str) else [int(p) for p in m.padding]
        return {
            "kind": "conv",
            "kernel": list(m.kernel_size),
            "stride": list(m.stride),
            "padding": pad,
            "dilation": list(m.dilation),
            "groups": "depthwise" if la.depthwise else int(m.groups),
            "bias": m.bias is not None,
            "padding_mode": m.padding_mode,
            "input_size": list(ctx.input_shape[1:]),
            "norm": ctx.norm,
            "activation": ctx.activation,
        }
    return {
        "kind": "linear",
        "bias": m.bias is not None,
        "input_size": list(ctx.input_shape[:-1]),
        "norm": ctx.norm,
        "activation": ctx.activation,
    }


def signature_key(sig: Mapping[str, Any]) -> str:
    """A short readable key of a signature, e.g. ``conv3x3/s1x1/p1x1/d1x1/g1@32x32+bn+relu``."""
    size = "x".join(str(s) for s in sig["input_size"]) or "-"
    tail = ("+bn" if sig["norm"] else "") + (f"+{sig['activation']}" if sig["activation"] else "")
    if sig["kind"] == "linear":
        return f"linear{'' if sig['bias'] else '/nobias'}@{size}{tail}"
    k = "x".join(str(v) for v in sig["kernel"])
    s = "x".join(str(v) for v in sig["stride"])
    p = sig["padding"] if isinstance(sig["padding"], str) else "x".join(str(v) for v in sig["padding"])
    d = "x".join(str(v) for v in sig["dilation"])
    g = "dw" if sig["groups"] == "depthwise" else f"g{sig['groups']}"
    extra = "" if sig["padding_mode"] == "zeros" else f"/{sig['padding_mode']}"
    return f"conv{k}/s{s}/p{p}/d{d}/{g}{'/bias' if sig['bias'] else ''}{extra}@{size}{tail}"


def _activation_module(name: str | None) -> list[nn.Module]:
    return [_ACTIVATION_MODULES[name]()] if name in _ACTIVATION_MODULES else []


def micro_graph(sig: Mapping[str, Any], cin: int, cout: int) -> tuple[nn.Module, tuple[int, ...]]:
    """The one-layer model of a signature at (cin, cout) and its input shape.

    Args:
        sig: a :func:`layer_signature`.
        cin: input channels (features of a linear layer).
        cout: output channels.

    Returns:
        The model in eval mode (layer, BatchNorm and activation as in ``sig``) and its input shape without batch.
    """
    if sig["kind"] == "linear":
        layers: list[nn.Module] = [nn.Flatten(), nn.Linear(cin, cout, bias=sig["bias"])]
        if sig["norm"]:
            layers.append(nn.BatchNorm1d(cout))
        return nn.Sequential(*layers, *_activation_module(sig["activation"])).eval(), (cin, 1, 1)
    groups = cin if sig["groups"] == "depthwise" else int(sig["groups"])
    padding = sig["padding"] if isinstance(sig["padding"], str) else tuple(sig["padding"])
    conv = nn.Conv2d(
        cin,
        cout,
        tuple(sig["kernel"]),
        stride=tuple(sig["stride"]),
        padding=padding,
        dilation=tuple(sig["dilation"]),
        groups=groups,
        bias=sig["bias"],
        padding_mode=sig["padding_mode"],
    )
    layers = [conv, *([nn.BatchNorm2d(cout)] if sig["norm"] else []), *_activation_module(sig["activation"])]
    return nn.Sequential(*layers).eval(), (cin, *sig["input_size"])


def export_micro_graph(net: nn.Module, shape: tuple[int, ...]) -> bytes:
    """A micro graph as serialized ONNX (dynamic batch), ready for an ONNX Runtime session."""
    return export_onnx_bytes(net, input_shape=shape)

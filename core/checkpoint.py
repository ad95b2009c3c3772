"""Loading and saving weights and models, always with ``torch.load(weights_only=True)``.

Formats understood by :func:`load_state_dict_file`:

- a plain state_dict, or a dict holding one under ``state_dict`` / ``model`` / ``model_state_dict``
  (the akamaster CIFAR ResNets: ``{'state_dict': ..., 'best_prec1': ...}`` with a ``module.`` prefix);
- prunegym checkpoints (``format: prunegym.checkpoint/1``) written by training;
- prunegym models (``format: prunegym.model/1``): base architecture + optional pruning policy + state_dict,
  rebuilt without unpickling any module;
- Deep Compression files (``*.dc``, :mod:`prunegym.core.dc_format`): the same description, sparse, weight-shared
  and Huffman-coded, decoded by :func:`read_checkpoint` into the same dict.
"""

from __future__ import annotations

import logging
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from prunegym.core.dc_format import DC_FORMAT, is_dc_file, read_dc
from prunegym.core.errors import CheckpointError
from prunegym.core.io import atomic_torch_save
from prunegym.core.models import build_model, model_info
from prunegym.core.run_folder import BEST_CHECKPOINT, LAST_CHECKPOINT, MODEL_FILE

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "prunegym.checkpoint/1"
MODEL_FORMAT = "prunegym.model/1"


def checkpoint_file(path: Path | str) -> Path:
    """The file a ``--model``/``--weights`` path means: itself, or in a run folder the model it made (replay,
    prune), else a training run's best, else its last (a folder without any of them: itself).

    Raises:
        CheckpointError: a run folder holding none of them.
    """
    path = Path(path)
    if not path.is_dir():
        return path
    found = [path / f for f in (MODEL_FILE, BEST_CHECKPOINT, LAST_CHECKPOINT) if (path / f).is_file()]
    if not found:
        raise CheckpointError(
            f"run folder {path} holds no {MODEL_FILE}, {BEST_CHECKPOINT} or {LAST_CHECKPOINT}; pass a model file"
        )
    return found[0]


def read_checkpoint(path: Path | str) -> dict[str, Any]:
    """``torch.load`` with ``weights_only=True`` onto the CPU, with one-line errors for the usual failures."""
    path = checkpoint_file(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint not found: {path}; check the path (--weights / --model)")
    if is_dc_file(path):
        return read_dc(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, EOFError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"cannot read checkpoint {path}: {first[:200]}; it is corrupt or not a PyTorch weights file "
            "(only weights-only checkpoints are accepted)"
        ) from exc
    if isinstance(obj, nn.Module):  # pragma: no cover - weights_only never returns modules
        raise CheckpointError(f"{path} holds a pickled module; save its state_dict instead")
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state_dict; save model.state_dict()")
    return obj


def extract_state_dict(obj: dict[str, Any], *, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Find the state_dict in a loaded checkpoint and strip a DataParallel ``module.`` prefix."""
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise CheckpointError(f"{source} holds no tensors; expected a state_dict (or a dict with 'state_dict')")
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module.") :]: v for k, v in tensors.items()}
    return tensors


def load_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], *, source: str = "checkpoint") -> None:
    """Strictly load ``state_dict`` into ``model``; missing BatchNorm ``num_batches_tracked`` is tolerated.

    Raises :class:`CheckpointError` naming missing/unexpected keys and the first shape mismatch.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state_dict if k not in own]
    mismatch = next(
        (
            (k, tuple(v.shape), tuple(own[k].shape))
            for k, v in state_dict.items()
            if k in own and v.shape != own[k].shape
        ),
        None,
    )
    if missing or unexpected or mismatch:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
        if mismatch:
            k, got, want = mismatch
            parts.append(f"first shape mismatch {k}: checkpoint {got} vs model {want}")
        raise CheckpointError(
            f"{source} does not fit the model: {'; '.join(parts)}; pick the --model these weights were trained for"
        )
    merged = {k: state_dict.get(k, v) for k, v in own.items()}
    model.load_state_dict(merged, strict=True)


def save_model(
    path: Path | str,
    *,
    model: nn.Module,
    policy: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Save a (possibly pruned) model as base architecture + policy + state_dict (no pickled modules)."""
    info = model_info(model)
    if info is None:
        raise CheckpointError("model has no prunegym_info; build it with prunegym.core.models.build_model")
    path = Path(path)
    if path.suffix not in {".pt", ".pth"}:
        path = path / MODEL_FILE
    payload = {
        "format": MODEL_FORMAT,
        "model": info.name,
        "num_classes": info.num_classes,
        "in_channels": info.in_channels,
        "policy": policy,
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        **(extra or {}),
    }
    return atomic_torch_save(path, payload)


def rebuild_model(obj: dict[str, Any], *, source: str) -> nn.Module:
    """Rebuild a model saved by :func:`save_model` (or a training checkpoint) from its description."""
    name = obj.get("model")
    if not isinstance(name, str):
        raise CheckpointError(f"{source} does not name its base model; pass --model NAME with --weights {source}")
    model = build_model(
        name,
        num_classes=obj.get("num_classes", 10),
        in_channels=obj.get("in_channels", 3),
        source=f"checkpoint {source}",
    )
    policy = obj.get("policy")
    if policy:
        from prunegym.core.pruning import (
            apply_policy_structure,  # the engine depends on models, not vice versa
        )

        model = apply_policy_structure(model, policy)
    load_weights(model, extract_state_dict(obj, source=source), source=source)
    return model


def load_model(
    model: str, *, weights: str | Path | None = None, num_classes: int = 10, in_channels: int = 3
) -> nn.Module:
    """Resolve ``--model``/``--weights``: a zoo name or factory, or a saved prunegym model (file or run folder)."""
    if ("/" in model or model.endswith((".pt", ".pth", ".dc")) or Path(model).is_dir()) and ":" not in model:
        obj = read_checkpoint(model)
        if obj.get("format") not in (MODEL_FORMAT, CHECKPOINT_FORMAT, DC_FORMAT):
            raise CheckpointError(f"{model} is not a prunegym model; use --model NAME --weights {model}")
        net = rebuild_model(obj, source=str(model))
        if weights is not None:
            load_weights(net, extract_state_dict(read_checkpoint(weights), source=str(weights)), source=str(weights))
        return net
    net = build_model(model, num_classes=num_classes, in_channels=in_channels)
    if weights is not None:
        obj = read_checkpoint(weights)
        if obj.get("policy"):
            raise CheckpointError(f"{weights} holds a pruned model; pass it as --model {weights} (no --weights)")
        load_weights(net, extract_state_dict(obj, source=str(weights)), source=str(weights))
    return net

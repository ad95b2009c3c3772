"""One-line errors for models the pruning engine cannot trace: :func:`traced_cost_table`.

The workflow commands call it first, before any work, so a model with a non-traceable op (numpy inside
``forward``, a tuple output, an input shape it cannot take) fails with a message naming the line of the model's
own code, not a Torch-Pruning traceback.
"""

from __future__ import annotations

import traceback
from pathlib import Path

import torch
from torch import nn

import prunegym.core
from prunegym.core.errors import UserError
from prunegym.core.pruning import CostTable, cost_table

# prunegym's engine: frames there are not the model's code (the zoo in core/models.py is)
_CORE = Path(prunegym.core.__file__).resolve().parent
_WORKFLOW = Path(__file__).resolve().parent
_ZOO = _CORE / "models.py"


def _in_engine(path: Path) -> bool:
    """Whether ``path`` is a file of prunegym's engine (core or workflow), the zoo excepted."""
    resolved = path.resolve()
    if resolved == _ZOO:
        return False
    return any(root == resolved.parent or root in resolved.parents for root in (_CORE, _WORKFLOW))


def _user_frame(exc: BaseException) -> traceback.FrameSummary | None:
    """The deepest traceback frame outside torch, Torch-Pruning and prunegym's engine: the model's own code."""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        path = Path(frame.filename)
        if frame.filename.startswith("<") or {"torch", "torch_pruning", "functorch"} & set(path.parts):
            continue
        if _in_engine(path):
            continue
        return frame
    return None


def _describe(exc: BaseException) -> str:
    """``Type at file:line `code`: first line of the message``, the frame being the model's own code."""
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
    frame = _user_frame(exc)
    where = f" at {Path(frame.filename).name}:{frame.lineno} `{(frame.line or '').strip()}`" if frame else ""
    return f"{type(exc).__name__}{where}: {first}"


def _check_forward(model: nn.Module, input_shape: tuple[int, int, int]) -> None:
    """Run one zero input; raise a one-line UserError if it fails or does not return one tensor."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, *input_shape, device=next(model.parameters()).device))
    except Exception as exc:
        raise UserError(
            f"model cannot run on input {tuple(input_shape)}: {_describe(exc)}; check --input-shape"
        ) from exc
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor):
        raise UserError(
            f"model returns a {type(out).__name__}, not one tensor of logits; wrap it so forward returns the logits"
        )


def traced_cost_table(model: nn.Module, *, input_shape: tuple[int, int, int]) -> CostTable:
    """:func:`~prunegym.core.pruning.cost_table` with one-line errors for models the graph cannot trace.

    Args:
        model: the model (its train/eval flag is restored).
        input_shape: ``(C, H, W)`` of one input.

    Returns:
        The model's cost table.

    Raises:
        UserError: the model cannot run on the input, returns something other than one tensor, cannot be traced
            (the message names the failing op: the line of the model's code, or the module, and the exception),
            or has no prunable groups.
    """
    _check_forward(model, input_shape)
    try:
        table = cost_table(model, input_shape=input_shape)
    except UserError:
        raise
    except Exception as exc:
        raise UserError(
            f"cannot trace the model's graph for pruning: {_describe(exc)}; replace that op with differentiable "
            "torch code or prune a model without it"
        ) from exc
    if not table.channels:
        raise UserError("the model has no prunable groups (no conv/linear layer whose channels can be removed)")
    return table

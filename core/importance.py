"""Channel-selection criteria for prunable groups, and least-squares reconstruction (He et al. 2017 / AMC).

Every criterion scores the channels of one group (higher = more important, kept first). Scores are computed
from the group's *producers* (the layers whose output channels the group removes), summed over producers, so
coupled groups (residual streams, expand + depthwise convs) get one score per shared channel:

- ``l1`` / ``l2``: filter norms (Li et al. 2017). Differs from Torch-Pruning's ``MagnitudeImportance``, which
  also adds the consumers' input-channel weights and the BN scales and normalizes per group.
- ``bn_scale``: ``|gamma|`` of the group's BatchNorms (network slimming); groups without BN fall back to l1.
- ``taylor``: ``|w · dL/dw|`` over the producers' weights, biases and BN affine parameters, with the gradient
  accumulated over the calibration batches in eval mode (Molchanov et al. 2019; BN statistics are not updated).
- ``fpgm``: sum of Euclidean distances of a filter to the others (He et al. 2019, geometric median). Torch-
  Pruning's ``FPGMImportance`` measures distances between ``|w|^p`` instead; we follow the paper.
- ``random``: seeded uniform scores (a baseline).
- ``lsq``: channel selection by output reconstruction of the group's single consumer layer, then a
  least-squares refit of that consumer's weights (He et al. 2017 "channel pruning", as used by AMC), see
  :func:`lsq_prune`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from prunegym.core.errors import UserError

log = logging.getLogger(__name__)

CRITERIA = ("l1", "l2", "taylor", "bn_scale", "fpgm", "random", "lsq")
NEEDS_CALIB = ("taylor", "lsq")


class Member(NamedTuple):
    """One module of a group with the channel indices it loses (``idxs``) and the group channel of each."""

    name: str
    module: nn.Module
    role: str  # "out": its output channels shrink (producer), "in": its input channels shrink (consumer)
    idxs: tuple[int, ...]
    root_idxs: tuple[int, ...]


def check_criterion(criterion: str, calib: object | None) -> None:
    if criterion not in CRITERIA:
        raise UserError(f"unknown pruning criterion '{criterion}'; use one of {', '.join(CRITERIA)}")
    if criterion in NEEDS_CALIB and calib is None:
        raise UserError(f"criterion '{criterion}' needs calibration batches; pass calib=[(x, y), ...] or use l1")


def is_depthwise(m: nn.Module) -> bool:
    return isinstance(m, nn.Conv2d) and m.groups > 1 and m.groups == m.in_channels == m.out_channels


def _scatter(n: int, root_idxs: Sequence[int], values: torch.Tensor) -> torch.Tensor:
    out = torch.zeros(n, dtype=torch.float64)
    out.index_add_(0, torch.tensor(root_idxs, dtype=torch.long), values.detach().double().cpu())
    return out


def _filters(m: Member) -> torch.Tensor:
    return m.module.weight.detach()[list(m.idxs)].flatten(1)


def channel_scores(criterion: str, members: Sequence[Member], n: int, *, seed: int = 0) -> torch.Tensor:
    """Scores (float64, length ``n``) of a group's channels; higher is kept first. ``lsq`` is not scored here."""
    producers = [m for m in members if m.role == "out"]
    weighted = [m for m in producers if isinstance(m.module, nn.Conv2d | nn.Linear)]
    norms = [m for m in producers if isinstance(m.module, nn.modules.batchnorm._BatchNorm) and m.module.affine]
    score = torch.zeros(n, dtype=torch.float64)
    if criterion == "bn_scale" and not norms:
        log.info("bn_scale: group without BatchNorm, scoring it by l1")
        criterion = "l1"
    if criterion in ("l1", "l2"):
        p = 1 if criterion == "l1" else 2
        for m in weighted:
            score += _scatter(n, m.root_idxs, _filters(m).abs().pow(p).sum(1))
        return score if p == 1 else score.sqrt()
    if criterion == "bn_scale":
        for m in norms:
            score += _scatter(n, m.root_idxs, m.module.weight.detach()[list(m.idxs)].abs())
        return score
    if criterion == "fpgm":
        for m in weighted:
            w = _filters(m).double()
            score += _scatter(n, m.root_idxs, torch.cdist(w[None], w[None])[0].sum(1))
        return score
    if criterion == "taylor":
        for m in weighted + norms:
            for param in (m.module.weight, m.module.bias):
                if param is None:
                    continue
                if param.grad is None:
                    raise UserError("taylor scores need gradients; the calibration batches produced none")
                wg = (param.detach() * param.grad.detach())[list(m.idxs)]
                score += _scatter(n, m.root_idxs, wg.abs().reshape(len(m.idxs), -1).sum(1))
        return score
    if criterion == "random":
        return torch.rand(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    raise UserError(f"criterion '{criterion}' has no channel scores; use one of l1, l2, taylor, bn_scale, fpgm")


def lowest(scores: torch.Tensor, count: int) -> tuple[int, ...]:
    """Indices of the ``count`` lowest scores (ties: the higher index goes first), sorted."""
    order = torch.argsort(-scores, stable=True)  # best first, ties by index
    return tuple(sorted(int(i) for i in order[len(scores) - count :]))


def split_calib(calib: Iterable) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    """Materialize calibration batches: ``(x, y)`` pairs or bare ``x`` tensors."""
    batches = []
    for item in calib:
        if isinstance(item, torch.Tensor):
            batches.append((item, None))
        elif isinstance(item, tuple | list) and item and isinstance(item[0], torch.Tensor):
            batches.append((item[0], item[1] if len(item) > 1 else None))
        else:
            raise UserError(f"calibration batches must be (x, y) tensor pairs, got {type(item).__name__}")
    if not batches:
        raise UserError("calibration data is empty; pass a few (x, y) batches from the training split")
    return batches


def accumulate_gradients(net: nn.Module, batches: Sequence[tuple[torch.Tensor, torch.Tensor | None]]) -> None:
    """Sum the cross-entropy gradients of ``net`` (in eval mode) over ``batches`` into ``.grad``."""
    net.zero_grad(set_to_none=True)
    device = next(net.parameters()).device
    with torch.enable_grad():
        for x, y in batches:
            if y is None:
                raise UserError("criterion 'taylor' needs labels; pass calib as (x, y) batches")
            F.cross_entropy(net(x.to(device)), y.to(device), reduction="sum").backward()


# ------------------------------------------------------------------------------ least-squares reconstruction


class _Stop(Exception):
    pass


def lsq_consumer(members: Sequence[Member]) -> Member | None:
    """The group's single consumer if lsq applies: one Conv2d (groups=1, zero padding) or Linear reading
    exactly the group's channels. None otherwise (residual groups, several consumers, grouped convs)."""
    consumers = [m for m in members if m.role == "in" and isinstance(m.module, nn.Conv2d | nn.Linear)]
    others = [m for m in members if m.role == "in" and not isinstance(m.module, nn.Conv2d | nn.Linear)]
    if len(consumers) != 1 or others:
        return None
    c = consumers[0]
    mod = c.module
    if isinstance(mod, nn.Conv2d) and (mod.groups != 1 or mod.padding_mode != "zeros" or isinstance(mod.padding, str)):
        return None
    width = mod.in_channels if isinstance(mod, nn.Conv2d) else mod.in_features
    return c if len(set(c.idxs)) == width else None


def _columns(consumer: Member, n: int) -> torch.Tensor | None:
    """(n, s) column indices of the consumer's flattened weight that read each group channel."""
    mod = consumer.module
    kk = mod.weight[0, 0].numel() if isinstance(mod, nn.Conv2d) else 1
    per: list[list[int]] = [[] for _ in range(n)]
    for idx, root in sorted(zip(consumer.idxs, consumer.root_idxs, strict=True)):
        per[root].extend(range(idx * kk, idx * kk + kk))
    if len({len(p) for p in per}) != 1:
        return None
    return torch.tensor(per, dtype=torch.long)


def _rows(mod: nn.Module, x: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
    """Consumer input rows (M, D): unfolded patches at the sampled output positions, or Linear input rows."""
    if isinstance(mod, nn.Conv2d):
        cols = F.unfold(x, mod.kernel_size, dilation=mod.dilation, padding=mod.padding, stride=mod.stride)
        cols = cols.transpose(1, 2)  # (B, L, D)
        batch = torch.arange(len(x), device=x.device)[:, None]
        return cols[batch, pos.to(x.device)].reshape(-1, cols.shape[2])
    return x.reshape(-1, x.shape[-1])


def _targets(mod: nn.Module, y: torch.Tensor, pos: torch.Tensor | None) -> torch.Tensor:
    if mod.bias is not None:
        y = y - mod.bias.detach().view(1, -1, *([1] * (y.dim() - 2)))
    if isinstance(mod, nn.Conv2d):
        flat = y.flatten(2).transpose(1, 2)  # (B, L, O)
        batch = torch.arange(len(y), device=y.device)[:, None]
        return flat[batch, pos.to(y.device)].reshape(-1, y.shape[1])
    return y.reshape(-1, y.shape[-1])


def _capture(net: nn.Module, module: nn.Module, xs: Sequence[torch.Tensor], take: Callable) -> list[torch.Tensor]:
    """Run ``net`` on each batch until ``module`` fires; collect ``take(inputs, output, batch_index)``."""
    got: list[torch.Tensor] = []
    state = {"b": 0}

    def hook(_m: nn.Module, inp: tuple, out: torch.Tensor) -> None:
        got.append(take(inp[0].detach(), out.detach(), state["b"]).double().cpu())
        raise _Stop

    handle = module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            for b, x in enumerate(xs):
                state["b"] = b
                with contextlib.suppress(_Stop):
                    net(x)
    finally:
        handle.remove()
    return got


def lsq_prune(
    net: nn.Module,
    original: nn.Module,
    *,
    plan: Sequence[tuple[str, int, int]],
    members: Callable[[str], list[Member]],
    prune: Callable[[str, Sequence[int]], None],
    batches: Sequence[tuple[torch.Tensor, torch.Tensor | None]],
    samples_per_image: int = 10,
    ridge: float = 1e-4,
    seed: int = 0,
) -> dict[str, tuple[int, ...]]:
    """Prune ``plan`` = [(group, channels, kept)] in order, choosing and refitting by reconstruction.

    For each group, on the calibration images: the consumer's inputs ``X`` come from the *partially pruned*
    ``net`` and its targets ``Y`` (pre-bias outputs) from the unpruned ``original``, at ``samples_per_image``
    random output positions per image (He et al. sample 10). Channel ``c`` contributes ``Z_c = X_c W_c``;
    channels are removed greedily so that ``||Y - sum_kept Z_c||`` grows least (ThiNet-style greedy instead
    of the paper's lasso, with the current error included), then the consumer's weights are refit by ridge-
    regularized least squares on the kept inputs. Groups without a single plain consumer (residual groups,
    a consumer that is a grouped conv, several consumers) are scored by l1 instead, with an info log.
    Both models must be in eval mode. Returns the removed channel indices per group.
    """
    device = next(net.parameters()).device
    xs = [x.to(device) for x, _ in batches]
    gen = torch.Generator().manual_seed(seed)
    removed: dict[str, tuple[int, ...]] = {}
    fallback: list[str] = []
    orig_modules = dict(original.named_modules())
    for name, n, keep in plan:
        group = members(name)
        consumer = lsq_consumer(group)
        cols = _columns(consumer, n) if consumer is not None else None
        if consumer is None or cols is None or consumer.name not in orig_modules:
            fallback.append(name)
            removed[name] = lowest(channel_scores("l1", group, n), n - keep)
            prune(name, removed[name])
            continue
        mod, ref = consumer.module, orig_modules[consumer.name]
        positions: list[torch.Tensor | None] = []

        def take_y(
            _i: torch.Tensor, out: torch.Tensor, _b: int, mod: nn.Module = ref, positions: list = positions
        ) -> torch.Tensor:
            pos = None
            if isinstance(mod, nn.Conv2d):
                pos = torch.randint(out[0, 0].numel(), (len(out), samples_per_image), generator=gen)
            positions.append(pos)
            return _targets(mod, out, pos)

        def take_x(i: torch.Tensor, _o: torch.Tensor, b: int, mod: nn.Module = mod, positions: list = positions):
            return _rows(mod, i, positions[b])

        y = torch.cat(_capture(original, ref, xs, take_y))
        p = torch.cat(_capture(net, mod, xs, take_x))
        w = mod.weight.detach().double().cpu().reshape(mod.weight.shape[0], -1)
        resid = y - p @ w.T
        gram = torch.zeros(n, n, dtype=torch.float64)
        corr = torch.zeros(n, dtype=torch.float64)
        wg = w[:, cols]  # (O, n, s)
        chunk = max(1, int(2e7 // max(1, n * w.shape[0])))
        for s in range(0, len(p), chunk):
            z = torch.einsum("mcs,ocs->cmo", p[s : s + chunk][:, cols], wg).reshape(n, -1)
            gram += z @ z.T
            corr += z @ resid[s : s + chunk].reshape(-1)
        # greedy removal: cost(T + j) - cost(T) = 2<R, Z_j> + 2 sum_{t in T} G_tj + G_jj
        taken = torch.zeros(n, dtype=torch.bool)
        acc = torch.zeros(n, dtype=torch.float64)
        for _ in range(n - keep):
            delta = 2 * corr + 2 * acc + gram.diagonal()
            delta[taken] = float("inf")
            j = int(torch.argmin(delta))
            taken[j] = True
            acc += gram[j]
        removed[name] = tuple(int(i) for i in torch.nonzero(taken).flatten())
        prune(name, removed[name])
        kept_cols = torch.sort(cols[~taken].reshape(-1)).values
        pk = p[:, kept_cols]
        a = pk.T @ pk
        a += torch.eye(len(a), dtype=a.dtype) * (ridge * a.diagonal().mean() + 1e-12)
        refit = torch.linalg.solve(a, pk.T @ y).T
        with torch.no_grad():
            mod.weight.copy_(refit.reshape(mod.weight.shape).to(mod.weight))
    if fallback:
        log.info("lsq: %d groups without a single plain consumer chose channels by l1: %s", len(fallback), fallback)
    return removed

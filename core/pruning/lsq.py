"""The ``lsq`` criterion: channel selection by output reconstruction, then a least-squares refit of the consumer.

He et al. 2017 "channel pruning", as used by AMC: for a group read by one plain consumer layer, channels are
removed so that the consumer's output on calibration images changes least, and the consumer's weights are then
refit on the kept inputs. See :func:`lsq_prune`.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from prunegym.core.pruning.importance import Member, channel_scores, lowest

log = logging.getLogger(__name__)


class _Stop(Exception):
    pass


def lsq_consumer(members: Sequence[Member]) -> Member | None:
    """The group's single consumer if lsq applies, else None.

    Args:
        members: the group's members with full indices.

    Returns:
        The one Conv2d (groups=1, zero padding) or Linear consumer reading exactly the group's channels; None
        otherwise (residual groups, several consumers, grouped convs).
    """
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
    """Pre-bias outputs (M, O) of ``mod`` at the sampled output positions (all rows for a Linear)."""
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


def _samples(
    net: nn.Module,
    original: nn.Module,
    *,
    mod: nn.Module,
    ref: nn.Module,
    xs: Sequence[torch.Tensor],
    gen: torch.Generator,
    samples_per_image: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(targets Y from the unpruned ref, inputs X of the pruned mod)`` at the same random output positions."""
    positions: list[torch.Tensor | None] = []

    def take_y(_i: torch.Tensor, out: torch.Tensor, _b: int) -> torch.Tensor:
        pos = None
        if isinstance(ref, nn.Conv2d):
            pos = torch.randint(out[0, 0].numel(), (len(out), samples_per_image), generator=gen)
        positions.append(pos)
        return _targets(ref, out, pos)

    def take_x(i: torch.Tensor, _o: torch.Tensor, b: int) -> torch.Tensor:
        return _rows(mod, i, positions[b])

    y = torch.cat(_capture(original, ref, xs, take_y))
    p = torch.cat(_capture(net, mod, xs, take_x))
    return y, p


def _greedy_removal(
    p: torch.Tensor, y: torch.Tensor, w: torch.Tensor, cols: torch.Tensor, *, n: int, count: int
) -> torch.Tensor:
    """Mask of the ``count`` channels whose removal grows the reconstruction error ``||Y - sum Z_c||`` least."""
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
    for _ in range(count):
        delta = 2 * corr + 2 * acc + gram.diagonal()
        delta[taken] = float("inf")
        j = int(torch.argmin(delta))
        taken[j] = True
        acc += gram[j]
    return taken


@torch.no_grad()
def _refit(
    mod: nn.Module, p: torch.Tensor, y: torch.Tensor, cols: torch.Tensor, taken: torch.Tensor, *, ridge: float
) -> None:
    """Refit the (already pruned) consumer's weights by ridge-regularized least squares on the kept inputs."""
    kept_cols = torch.sort(cols[~taken].reshape(-1)).values
    pk = p[:, kept_cols]
    a = pk.T @ pk
    a += torch.eye(len(a), dtype=a.dtype) * (ridge * a.diagonal().mean() + 1e-12)
    refit = torch.linalg.solve(a, pk.T @ y).T
    mod.weight.copy_(refit.reshape(mod.weight.shape).to(mod.weight))


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
    """Prune ``plan`` in order, choosing and refitting by reconstruction.

    For each group, on the calibration images: the consumer's inputs ``X`` come from the *partially pruned*
    ``net`` and its targets ``Y`` (pre-bias outputs) from the unpruned ``original``, at ``samples_per_image``
    random output positions per image (He et al. sample 10). Channel ``c`` contributes ``Z_c = X_c W_c``;
    channels are removed greedily so that ``||Y - sum_kept Z_c||`` grows least (ThiNet-style greedy instead
    of the paper's lasso, with the current error included), then the consumer's weights are refit by ridge-
    regularized least squares on the kept inputs. Groups without a single plain consumer (residual groups,
    a consumer that is a grouped conv, several consumers) are scored by l1 instead, with an info log.

    Args:
        net: the model being pruned, in place (eval mode).
        original: the unpruned model (eval mode), for the reconstruction targets.
        plan: ``[(group, channels, kept)]``.
        members: the members of a group in ``net``'s current state.
        prune: removes the given channels of a group from ``net``.
        batches: calibration ``(x, y)`` batches (the labels are not used).
        samples_per_image: output positions sampled per image for a conv consumer.
        ridge: ridge regularization, relative to the mean diagonal of the Gram matrix.
        seed: seeds the sampled positions.

    Returns:
        The removed channel indices per group.
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
        y, p = _samples(net, original, mod=mod, ref=ref, xs=xs, gen=gen, samples_per_image=samples_per_image)
        w = mod.weight.detach().double().cpu().reshape(mod.weight.shape[0], -1)
        taken = _greedy_removal(p, y, w, cols, n=n, count=n - keep)
        removed[name] = tuple(int(i) for i in torch.nonzero(taken).flatten())
        prune(name, removed[name])
        _refit(mod, p, y, cols, taken, ridge=ridge)
    if fallback:
        log.info("lsq: %d groups without a single plain consumer chose channels by l1: %s", len(fallback), fallback)
    return removed

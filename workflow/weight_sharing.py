"""Weight sharing (Han et al. 2016): k-means of each layer's nonzero weights, then centroid finetuning.

The clustering is scikit-learn's :class:`~sklearn.cluster.KMeans` (one dimension, ``n_init=1``) started from one
of the paper's three initializations given as an ``init=`` array: ``random`` (Forgy: k weights drawn at random),
``density`` (k quantiles of the weights' distribution, equally spaced on the CDF) and ``linear`` (k values equally
spaced between the smallest and largest weight; the paper's best, as it keeps the rare large weights). Pruned
(zero) weights stay zero and are not clustered. Centroid finetuning sums each cluster's weight gradients and
updates the centroid by SGD (the paper's eq. 3), so every layer keeps at most ``2**bits`` distinct nonzero values.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from prunegym.core.data import DataSplits, iterate_batches, normalize
from prunegym.core.evaluate import input_norm

__all__ = ["INITS", "SharedWeights", "finetune_centroids", "share_weights"]

log = logging.getLogger(__name__)

INITS = ("random", "density", "linear")


@dataclass
class SharedWeights:
    """One layer's sharing: the centroids and, for every weight, its cluster (``-1``: pruned, stays zero).

    Args:
        codebook: float32 centroids, shape ``(k,)``.
        index: int64 cluster of every weight, the weight's shape.
        bits: the index width (``k ≤ 2**bits``).
    """

    codebook: torch.Tensor
    index: torch.Tensor
    bits: int

    def weight(self) -> torch.Tensor:
        """The shared weight tensor: ``codebook[index]``, zero where pruned."""
        w = self.codebook[self.index.clamp(min=0)]
        return torch.where(self.index >= 0, w, torch.zeros((), dtype=w.dtype))


def _init_centroids(values: np.ndarray, k: int, init: str, rng: np.random.Generator) -> np.ndarray:
    if init == "random":
        return rng.choice(values, size=k, replace=False)
    if init == "density":
        return np.quantile(values, (np.arange(k) + 0.5) / k)
    return np.linspace(values.min(), values.max(), k)


def share_weights(
    model: nn.Module, *, names: Mapping[str, int], init: str = "linear", seed: int = 0
) -> dict[str, SharedWeights]:
    """Cluster each named weight's nonzero values into at most ``2**bits`` centroids and write the shared weights
    into ``model`` (in place).

    Args:
        model: the (pruned) model.
        names: state_dict name of each weight to share → its bits.
        init: ``random`` (Forgy), ``density`` or ``linear`` centroid initialization.
        seed: seeds the ``random`` initialization.

    Returns:
        name → :class:`SharedWeights`.
    """
    from sklearn.cluster import KMeans  # lazily: scikit-learn loads in a second or two

    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}, got {init!r}")
    params = dict(model.named_parameters())
    rng = np.random.default_rng(seed)
    shared: dict[str, SharedWeights] = {}
    for name, bits in names.items():
        w = params[name].detach().cpu()
        flat = w.flatten().numpy().astype(np.float64)
        nz = flat != 0
        values = flat[nz]
        k = min(2**bits, len(np.unique(values)))
        index = np.full(flat.shape, -1, dtype=np.int64)
        if k == 0:
            book = np.zeros(0, dtype=np.float32)
        else:
            start = np.unique(_init_centroids(values, k, init, rng))  # quantiles of a tiny layer may coincide
            km = KMeans(n_clusters=len(start), init=start.reshape(-1, 1), n_init=1, random_state=seed)
            index[nz] = km.fit_predict(values.reshape(-1, 1))
            book = km.cluster_centers_.ravel().astype(np.float32)
        sw = SharedWeights(codebook=torch.from_numpy(book), index=torch.from_numpy(index).reshape(w.shape), bits=bits)
        with torch.no_grad():
            params[name].copy_(sw.weight())
        shared[name] = sw
        log.debug("%s: %d weights → %d centroids (%d bits)", name, int(nz.sum()), len(book), bits)
    return shared


def finetune_centroids(
    model: nn.Module,
    shared: Mapping[str, SharedWeights],
    data: DataSplits,
    *,
    steps: int,
    lr: float,
    batch_size: int = 128,
    momentum: float = 0.9,
    seed: int = 0,
    progress: Callable[[int, int, float], None] | None = None,
) -> None:
    """Train the centroids (and nothing else) for ``steps`` SGD steps on ``data.train``; the model's shared
    weights are rewritten from the centroids after every step. BatchNorm statistics follow the batches (train mode).

    Args:
        model: the model holding the shared weights.
        shared: its :class:`SharedWeights` (the codebooks are updated in place).
        data: the dataset.
        steps: SGD steps (0: nothing).
        lr: learning rate of the centroids (their gradient is a sum over the cluster, so keep it small).
        batch_size: images per step.
        momentum: SGD momentum.
        seed: seeds the batches.
        progress: ``progress(done, total, loss)`` after every step.
    """
    if steps <= 0:
        return
    params = dict(model.named_parameters())
    books = {n: s.codebook.clone().requires_grad_(True) for n, s in shared.items()}
    opt = torch.optim.SGD(list(books.values()), lr=lr, momentum=momentum)
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    for n in shared:
        params[n].requires_grad_(True)
    mean, std = input_norm(model, mean=data.mean, std=data.std)
    model.train()
    done, epoch = 0, 0
    try:
        while done < steps:
            gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
            for xb, yb in iterate_batches(
                data.train_x,
                data.train_y,
                batch_size=batch_size,
                mean=(0.0,) * data.in_channels,
                std=(1.0,) * data.in_channels,
                shuffle=True,
                augment=data.augment,
                generator=gen,
                drop_last=True,
            ):
                loss = F.cross_entropy(model(normalize(xb, mean=mean, std=std)), yb)
                model.zero_grad(set_to_none=True)
                loss.backward()
                opt.zero_grad(set_to_none=True)
                for n, s in shared.items():
                    grad = params[n].grad.flatten()
                    idx = s.index.flatten()
                    keep = idx >= 0
                    books[n].grad = torch.zeros_like(books[n]).index_add_(0, idx[keep], grad[keep])
                opt.step()
                with torch.no_grad():
                    for n, s in shared.items():
                        s.codebook = books[n].detach().clone()
                        params[n].copy_(s.weight())
                done += 1
                if progress is not None:
                    progress(done, steps, float(loss.detach()))
                if done >= steps:
                    break
            epoch += 1
    finally:
        for p in frozen:
            p.requires_grad_(True)
        model.zero_grad(set_to_none=True)
        model.eval()

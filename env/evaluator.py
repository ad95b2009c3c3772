"""The honest evaluator: prune → BatchNorm re-calibration → optional short finetune → val accuracy.

Accuracy is measured on a fixed split carved from the *training* set (``DataSplits.val``), never on the test
split. Everything is seeded, so the same policy always gets the same accuracy; results are cached by the
channel counts a policy produces (two ratios that round to the same channels are one candidate).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from prunegym.core.data import DataSplits, iterate_batches
from prunegym.core.errors import UserError
from prunegym.core.evaluate import evaluate, input_norm, recalibrate_bn
from prunegym.core.policy import Policy
from prunegym.core.pruning import apply_policy, cost_table, kept_channels
from prunegym.core.pruning.depth import inside
from prunegym.env.spec import EvaluatorConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Evaluation:
    accuracy: float  # top-1 percent on the val subset
    top5: float
    macs: int
    params: int
    kept: tuple[int, ...]
    seconds: Mapping[str, float] = field(default_factory=dict)
    cached: bool = False
    model: nn.Module | None = field(default=None, compare=False, repr=False)  # only when asked, never cached


class Evaluator:
    """Scores policies for one base model on one dataset. Build once, call :meth:`evaluate` per candidate."""

    def __init__(
        self, *, model: nn.Module, data: DataSplits, config: EvaluatorConfig, input_shape: tuple[int, int, int]
    ) -> None:
        if config.val_size > len(data.val_x):
            raise UserError(
                f"val_size {config.val_size} exceeds the {len(data.val_x)} val images of {data.spec}; "
                "lower val_size or load the data with a larger val split"
            )
        self.model = model.eval()
        self.data = data
        self.config = config if config.round_to is not None else replace(config, round_to=1)
        self.input_shape = tuple(input_shape)
        self.mean, self.std = input_norm(model, mean=data.mean, std=data.std)
        self.table = cost_table(model, input_shape=self.input_shape, residual_stream=config.residual_stream)
        self.group_names = tuple(self.table.channels)
        self.base_macs, self.base_params = self.table.macs, self.table.params
        self._val = (data.val_x[: config.val_size], data.val_y[: config.val_size])
        self._cache: OrderedDict[tuple[tuple[int, ...], tuple[str, ...]], Evaluation] = OrderedDict()

    def check_val_split(self, *, threshold: float = 99.5, images: int = 1000) -> float | None:
        """The unpruned model's top-1 on the first ``images`` val images, with a warning when it is so high
        (≥ ``threshold``) that the model was probably trained on them, which a val split carved from the training
        set then flatters; ``None`` (nothing evaluated) when the val split is already half of the test set. One
        evaluation at start-up, bounded by ``images`` whatever the search's val size."""
        if "val=test-half" in self.data.spec:
            return None
        x, y = self._val[0][:images], self._val[1][:images]
        top1 = evaluate(self.model, x, y, mean=self.mean, std=self.std).top1
        if top1 >= threshold:
            log.warning(
                "the unpruned model scores %.2f%% on the %d val images carved from the training set: it was "
                "probably trained on them, so search accuracies are flattered. For such a checkpoint search on "
                "one half of the test set and report on the other: --data '%s%sval=test-half'",
                top1,
                len(y),
                self.data.spec,
                "&" if "?" in self.data.spec else "?",
            )
        return top1

    def kept(self, ratios: Mapping[str, float]) -> tuple[int, ...]:
        return tuple(kept_channels(n, ratios.get(g, 0.0), self.config.round_to) for g, n in self.table.channels.items())

    def _calib(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(self.config.seed + 17)
        batches = iterate_batches(
            self.data.train_x,
            self.data.train_y,
            batch_size=64,
            mean=self.mean,
            std=self.std,
            shuffle=True,
            generator=g,
            limit=64 * self.config.calib_batches,
        )
        return list(batches)

    def prune(self, ratios: Mapping[str, float], *, removed: Sequence[str] = ()) -> nn.Module:
        """The pruned model of ``ratios`` without the ``removed`` blocks, BN re-calibrated (before any finetune)."""
        cfg = self.config
        calib = self._calib() if cfg.criterion in {"taylor", "lsq"} else None
        policy = Policy(ratios=dict(ratios), round_to=cfg.round_to, removed=tuple(removed))
        net = apply_policy(
            self.model,
            policy,
            input_shape=self.input_shape,
            criterion=cfg.criterion,
            calib=calib,
            residual_stream=cfg.residual_stream,
        )
        if cfg.bn_recalib_images:
            recalibrate_bn(
                net,
                self.data.train_x,
                mean=self.mean,
                std=self.std,
                num_images=cfg.bn_recalib_images,
                augment=cfg.bn_recalib_augment or self.data.augment,
                seed=cfg.seed,
            )
        return net

    def score(self, net: nn.Module) -> tuple[float, float]:
        res = evaluate(net, *self._val, mean=self.mean, std=self.std, batch_size=self.config.batch_size)
        return res.top1, res.top5

    def finetune(self, net: nn.Module, *, report: Callable[[int, float], None] | None = None) -> nn.Module:
        """``finetune_steps`` seeded SGD steps; ``report(step, accuracy)`` every ``report_every`` steps (it may
        raise to stop early, e.g. ``optuna.TrialPruned``)."""
        cfg = self.config
        torch.manual_seed(cfg.seed)
        g = torch.Generator().manual_seed(cfg.seed + 1)
        opt = torch.optim.SGD(net.parameters(), lr=cfg.finetune_lr, momentum=0.9, weight_decay=5e-4)
        step = 0
        net.train()
        while step < cfg.finetune_steps:
            for xb, yb in iterate_batches(
                self.data.train_x,
                self.data.train_y,
                batch_size=cfg.finetune_batch_size,
                mean=self.mean,
                std=self.std,
                shuffle=True,
                augment=self.data.augment,
                generator=g,
                drop_last=True,
            ):
                loss = F.cross_entropy(net(xb), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                if report is not None and step % cfg.report_every == 0 and step < cfg.finetune_steps:
                    report(step, self.score(net)[0])
                    net.train()
                if step >= cfg.finetune_steps:
                    break
        return net.eval()

    def evaluate(
        self,
        ratios: Mapping[str, float],
        *,
        report: Callable[[int, float], None] | None = None,
        keep_model: bool = False,
        removed: Sequence[str] = (),
    ) -> Evaluation:
        """Score ``ratios`` (group → ratio; missing groups keep every channel) without the ``removed`` blocks.

        With ``keep_model`` the pruned (and finetuned) model comes back in ``Evaluation.model``; a cached
        candidate is then evaluated again rather than returned without its model.
        """
        removed = tuple(sorted(removed))
        kept = self.kept({k: v for k, v in ratios.items() if not inside(k, removed)})
        key = (kept, removed)
        hit = None if keep_model else self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return replace(hit, cached=True, seconds={})
        seconds: dict[str, float] = {}
        t = time.perf_counter()
        net = self.prune(ratios, removed=removed)
        seconds["prune+bn"] = time.perf_counter() - t
        if self.config.finetune_steps:
            if report is not None:
                report(0, self.score(net)[0])
            t = time.perf_counter()
            self.finetune(net, report=report)
            seconds["finetune"] = time.perf_counter() - t
        t = time.perf_counter()
        top1, top5 = self.score(net)
        seconds["eval"] = time.perf_counter() - t
        macs, params = self.table.predict(ratios, round_to=self.config.round_to, removed=removed)
        result = Evaluation(accuracy=top1, top5=top5, macs=macs, params=params, kept=kept, seconds=seconds)
        self._cache[key] = result
        if len(self._cache) > self.config.cache_size:
            self._cache.popitem(last=False)
        return replace(result, model=net) if keep_model else result

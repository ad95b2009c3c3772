"""The Vitis-AI/DeePhi workflow commands: ``ana``, ``prune``, ``transform``, ``iterate`` (``finetune`` is in
:mod:`prunegym.cli.model` and accepts a pruned model as ``--model DIR/model.pt``).

The engine is :mod:`prunegym.workflow` (sensitivity analysis, ana-based plans, rounds, plots); these commands
parse options, call it, and print the DeePhi summary table.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from prunegym.cli.model import load_model_and_data, resolve_input_shape
from prunegym.cli.util import (
    add_command,
    add_config_flags,
    config_from_args,
    progress_bar,
    stdout,
)
from prunegym.core.errors import UserError
from prunegym.core.io import atomic_write_text, write_json
from prunegym.core.policy import Policy
from prunegym.core.run_folder import CONFIG_FILE, MODEL_FILE, prepare_run_dir
from prunegym.workflow.configs import AnaConfig, IterateConfig, PruneConfig, TransformConfig

if TYPE_CHECKING:  # the heavy modules load inside the commands, so that parsing needs no PyTorch
    from torch import nn

    from prunegym.core.pruning import CostTable
    from prunegym.workflow import RoundResult, Summary

log = logging.getLogger(__name__)

R20 = "--model resnet20 --weights ../shared/data/pretrained/resnet20-12fca82f.th --data cifar10:../shared/data/cifar-10-batches-py"
HELP = {
    "model": "zoo name, package.module:factory or file.py:factory (?key=value for its arguments), or a saved prunegym model (file or run folder)",
    "data": "data spec: cifar10:DIR, cifar100:DIR, mnist:DIR, fashion-mnist:DIR, folder:DIR, digits",
    "weights": "weights of the (unpruned) model",
    "out": "run folder",
    "ratios": "fractions of each group's output channels to remove, one analysis per ratio",
    "val_size": "val images carved from the training set (None: the dataset's default split)",
    "bn_recalib_images": "training images to re-estimate BatchNorm statistics after pruning (0 = off)",
    "criterion": "channel selection: l1, l2, taylor, bn_scale, fpgm, lsq",
    "round_to": "round channel counts to this multiple",
    "calib_batches": "batches of 64 training images for taylor/lsq",
    "rate": "fraction of the MACs to remove (as vai_p's rate), e.g. 0.5",
    "threshold": "largest accuracy loss (points) allowed per group in the ana result (as vai_p_darknet)",
    "ana": "folder of a `prunegym ana` run: per-group ratios from its sensitivities",
    "uniform": "the same ratio for every group",
    "policy": "a policy YAML (group: ratio); carries its own round_to",
    "mode": "dense (channels removed) or masked (zeroed in place, shapes kept; then `prunegym transform`)",
    "input_shape": "C,H,W (None: the data's or the model's)",
    "batch_size": "images per batch (evaluation; finetune for iterate)",
    "seed": "seeds the val split, BN re-calibration images and finetuning",
    "kd_alpha": "weight of the distillation term (with --distill)",
    "kd_temperature": "distillation temperature (with --distill)",
    "teacher_precision": "fp32, or bf16: the teacher's forward under bfloat16 autocast (with --distill; half its "
    "time on a CPU with AVX-512 BF16 or AMX)",
    "atol": "largest output change a channel removal may cause (relative to the output scale)",
    "rates": "cumulative fractions of the ORIGINAL MACs removed after each round, e.g. 0.1,0.2,0.3",
    "epochs_per_round": "finetune epochs per round",
    "lr": "finetune learning rate (decays to 0 per round by --lr-schedule)",
    "lr_schedule": "cosine or poly (Caffe's poly policy, the DeePhi tutorial's solver)",
    "lr_power": "exponent of the poly schedule",
    "weight_decay": "finetune SGD weight decay",
    "nesterov": "Nesterov momentum in the finetune (--no-nesterov: plain momentum, as Caffe's solver)",
    "convention": "weights/operations counting: prunegym (every parameter) or deephi (the Vitis-AI tutorial's)",
    "distill": "distill every round's finetune from the unpruned model",
    "max_steps_per_epoch": "cap finetune steps per epoch (quick runs)",
    "eval_test": "report the test top-1 of each round too",
}


def _check_out(out: str, *, flag: str, allowed: bool) -> None:
    """Fail before any work when ``out`` holds a run and ``flag`` was not given (nothing is written yet)."""
    if (Path(out) / CONFIG_FILE).exists() and not allowed:
        raise UserError(f"run folder {out} already holds a run; pass {flag} to replace it or choose another --out")


def _print_summary(summary: Summary, *, title: str) -> None:
    stdout.print(summary.table(title=title))
    if summary.accuracy_note:
        stdout.print(summary.accuracy_note, style="dim")


def _meta(net: nn.Module, cfg: Any, shape: tuple[int, int, int], source: str) -> dict[str, Any]:
    from prunegym.core.models import model_info

    info = model_info(net)
    return {
        "model": info.name if info else cfg.model,
        "round_to": cfg.round_to,
        "criterion": cfg.criterion,
        "input_shape": tuple(shape),
        "source": source,
    }


def _uniform_policy(
    net: nn.Module, table: CostTable, shape: tuple[int, int, int], *, rate: float, meta: dict[str, Any]
) -> Policy:
    from prunegym.core.pruning import uniform_ratio_for_macs

    round_to = meta["round_to"]
    top = min((n - 1) / n for n in table.channels.values() if n > 1) - 1e-6
    max_rate = 1.0 - table.predict(dict.fromkeys(table.channels, top), round_to=round_to)[0] / table.macs
    if rate > max_rate:
        raise UserError(
            f"--rate {rate} is unreachable with --uniform: at most {max_rate:.4f} of the MACs can be "
            "removed (every group down to its last channels); lower --rate"
        )
    ratio = uniform_ratio_for_macs(net, input_shape=shape, target_macs_fraction=1.0 - rate, round_to=round_to)
    return Policy.uniform(table.channels, ratio, **meta)


def _ana_policy(
    table: CostTable, *, ana: str, rate: float | None, threshold: float | None, model_name: str, meta: dict[str, Any]
) -> tuple[Policy, Any]:
    from prunegym.workflow.prune_plan import plan_for_rate, plan_for_threshold
    from prunegym.workflow.sensitivity import load_sensitivity

    sens = load_sensitivity(ana)
    if sens.model != model_name:
        log.warning("the ana result in %s was computed for model %r, pruning %r", ana, sens.model, model_name)
    if rate is not None:
        plan = plan_for_rate(sens, table, rate=rate, round_to=meta["round_to"])
    else:
        plan = plan_for_threshold(sens, table, threshold=threshold or 0.0, round_to=meta["round_to"])
    return plan.policy(**meta), plan


# ----------------------------------------------------------------------------------------------- ana


def cmd_ana(args: argparse.Namespace) -> int:
    from prunegym.workflow import traced_cost_table

    cfg = config_from_args(AnaConfig, args)
    net, splits = load_model_and_data(
        model=cfg.model, weights=cfg.weights, data=cfg.data, val_size=cfg.val_size, seed=cfg.seed
    )
    assert splits is not None
    shape = splits.input_shape
    traced_cost_table(net, input_shape=shape)
    from prunegym.env.evaluator import Evaluator, EvaluatorConfig
    from prunegym.workflow.sensitivity import run_sensitivity, table_header, table_rows, write_outputs

    ev_cfg = EvaluatorConfig(
        val_size=len(splits.val_y),
        bn_recalib_images=cfg.bn_recalib_images,
        batch_size=cfg.batch_size,
        criterion=cfg.criterion,
        round_to=cfg.round_to,
        calib_batches=cfg.calib_batches,
        seed=cfg.seed,
    )
    evaluator = Evaluator(model=net, data=splits, config=ev_cfg, input_shape=shape)
    run_dir = prepare_run_dir(cfg.out, config=cfg, resume=args.resume, command="ana")
    name = _meta(net, cfg, shape, "ana")["model"]
    settings = {
        "model": cfg.model,
        "weights": cfg.weights,
        "data": cfg.data,
        "val_size": len(splits.val_y),
        "bn_recalib_images": cfg.bn_recalib_images,
        "criterion": cfg.criterion,
        "round_to": cfg.round_to,
        "calib_batches": cfg.calib_batches,
        "seed": cfg.seed,
    }
    with progress_bar() as bar:
        task = bar.add_task("ana", total=1 + len(evaluator.group_names) * len(cfg.ratios), info="")

        def on_cell(done: int, total: int, info: str) -> None:
            bar.update(task, completed=done, total=total, info=info)

        run = run_sensitivity(
            evaluator=evaluator,
            ratios=cfg.ratios,
            out_dir=run_dir,
            model_name=name,
            settings=settings,
            progress=on_cell,
        )
    paths = write_outputs(run.result, run_dir)
    table = Table(
        title=f"Sensitivity of {name}: val top-1 % (n={len(splits.val_y)}, BN re-calibrated), each layer pruned alone"
    )
    for i, col in enumerate(table_header(run.result)):
        if i == 0:
            table.add_column(col, overflow="fold")
        else:
            table.add_column(col, justify="right", no_wrap=True, min_width=5)
    for row in table_rows(run.result):
        table.add_row(*row)
    # a terminal gets its width; files and pipes (no width) get the whole table
    (stdout if stdout.is_terminal else Console(width=250)).print(table)
    stdout.print(f"{run.computed} evaluations computed, {run.reused} reused from {paths['json'].parent / 'ana.jsonl'}")
    stdout.print(f"→ {paths['md']}, {paths['csv']}, {paths['json']}, {paths['heatmap']}")
    return 0


# ----------------------------------------------------------------------------------------------- prune


def cmd_prune(args: argparse.Namespace) -> int:
    from prunegym.core.pruning import kept_channels
    from prunegym.workflow import prune_model, save_pruned, traced_cost_table

    cfg = config_from_args(PruneConfig, args)
    net, splits = load_model_and_data(
        model=cfg.model, weights=cfg.weights, data=cfg.data, val_size=cfg.val_size, seed=cfg.seed
    )
    shape = resolve_input_shape(net, model_arg=cfg.model, data=splits, explicit=cfg.input_shape)
    table = traced_cost_table(net, input_shape=shape)
    plan = None
    if cfg.policy:
        meta = _meta(net, cfg, shape, "policy")
        loaded = Policy.load(cfg.policy)
        if cfg.round_to not in (1, loaded.round_to):
            log.warning("--round-to %d ignored: %s carries round_to %d", cfg.round_to, cfg.policy, loaded.round_to)
        policy = replace(loaded, criterion=cfg.criterion, input_shape=tuple(shape), model=loaded.model or meta["model"])
    elif cfg.uniform:
        assert cfg.rate is not None
        policy = _uniform_policy(net, table, shape, rate=cfg.rate, meta=_meta(net, cfg, shape, "uniform"))
    else:
        assert cfg.ana is not None
        meta = _meta(net, cfg, shape, "ana")
        policy, plan = _ana_policy(
            table, ana=cfg.ana, rate=cfg.rate, threshold=cfg.threshold, model_name=meta["model"], meta=meta
        )
    _check_out(cfg.out, flag="--overwrite", allowed=args.overwrite)
    result = prune_model(
        model=net,
        policy=policy,
        input_shape=shape,
        data=splits,
        mode=cfg.mode,
        criterion=cfg.criterion,
        bn_recalib_images=cfg.bn_recalib_images,
        batch_size=cfg.batch_size,
        calib_batch_count=cfg.calib_batches,
        seed=cfg.seed,
        convention=cfg.convention,
    )
    run_dir = prepare_run_dir(cfg.out, config=cfg, resume=args.overwrite, command="prune")
    path = save_pruned(run_dir, result)
    groups = Table(title=f"{policy.source} policy ({cfg.mode})")
    for col in ("group", "channels kept", "ratio") + (("ana loss (pt)",) if plan is not None else ()):
        groups.add_column(col, justify="left" if col == "group" else "right")
    for g, n in table.channels.items():
        r = result.policy.ratio(g)
        row = [g, f"{kept_channels(n, r, result.policy.round_to, name=g)}/{n}", f"{r:.4f}"]
        groups.add_row(*row, *((f"{plan.predicted_loss.get(g, 0.0):.2f}",) if plan is not None else ()))
    stdout.print(groups)
    if plan is not None:
        stdout.print(
            f"ana {plan.rule} rule: loss threshold {plan.threshold:.4f} points per group → "
            f"{100 * plan.macs_removed:.2f}% of the MACs removed"
        )
    _print_summary(result.summary, title=f"prune {cfg.model} ({cfg.mode})")
    stdout.print(f"→ {path}, {run_dir / 'policy.yaml'}")
    return 0


# ----------------------------------------------------------------------------------------------- transform


def cmd_transform(args: argparse.Namespace) -> int:
    from prunegym.core.checkpoint import save_model
    from prunegym.core.data import load_data
    from prunegym.core.evaluate import check_model_fits_data
    from prunegym.core.pruning import max_abs_diff, transform
    from prunegym.workflow import load_masked_model, summarize, traced_cost_table, val_accuracy

    cfg = config_from_args(TransformConfig, args)
    splits = load_data(cfg.data, val_size=cfg.val_size, seed=cfg.seed) if cfg.data else None
    kwargs = {"num_classes": splits.num_classes, "in_channels": splits.in_channels} if splits else {}
    masked = load_masked_model(cfg.model, weights=cfg.weights, **kwargs)
    shape = resolve_input_shape(masked, model_arg=cfg.model, data=splits, explicit=cfg.input_shape)
    if splits is not None:
        check_model_fits_data(masked, input_shape=shape, num_classes=splits.num_classes, data_name=cfg.data or "")
    traced_cost_table(masked, input_shape=shape)
    result = transform(masked, input_shape=shape, atol=cfg.atol)
    diff = max_abs_diff(masked, result.model, input_shape=shape, n=16, seed=cfg.seed + 1)
    run_dir = prepare_run_dir(cfg.out, config=cfg, resume=args.overwrite, command="transform")
    extra = {"input_shape": list(shape), "transform": {"max_abs_diff": diff, "removed": dict(result.removed)}}
    path = save_model(run_dir / MODEL_FILE, model=result.model, policy=result.policy.to_dict(), extra=extra)
    result.policy.save(run_dir / "policy.yaml")
    accs: tuple[float | None, float | None] = (None, None)
    if splits is not None:
        accs = (val_accuracy(masked, splits), val_accuracy(result.model, splits))
    summary = summarize(
        baseline=masked,
        compressed=result.model,
        input_shape=shape,
        baseline_accuracy=accs[0],
        compressed_accuracy=accs[1],
        accuracy_note="baseline: the masked model; compressed: dense"
        + (f"; top-1 on {len(splits.val_y)} val images" if splits else ""),
    )
    write_json(run_dir / "summary.json", {**summary.to_dict(), "max_abs_diff": diff, "removed": dict(result.removed)})
    atomic_write_text(run_dir / "summary.md", summary.markdown(title="transform"))
    removed = sum(result.removed.values())
    stdout.print(f"removed {removed} zeroed channels in {len(result.removed)} groups")
    if result.kept_constant:
        stdout.print(
            f"kept {sum(result.kept_constant.values())} zero-filter channels whose BatchNorm outputs a "
            "nonzero constant (zero the BatchNorm's weight and bias too to remove them)"
        )
    if not removed:
        log.warning("no channel of %s is provably dead; the dense model equals the input", cfg.model)
    ok = "ok" if diff <= cfg.atol else f"above {cfg.atol:g}: check the model"
    stdout.print(f"max abs output difference, masked vs dense, 16 random inputs: {diff:.3g} ({ok})")
    _print_summary(summary, title=f"transform {cfg.model}")
    stdout.print(f"→ {path}")
    return 0


# ----------------------------------------------------------------------------------------------- iterate


def cmd_iterate(args: argparse.Namespace) -> int:
    from prunegym.core.checkpoint import save_model
    from prunegym.workflow import (
        Summary,
        check_finished_rounds,
        iterate_rounds,
        summarize,
        traced_cost_table,
        val_accuracy,
    )

    cfg = config_from_args(IterateConfig, args)
    net, splits = load_model_and_data(
        model=cfg.model, weights=cfg.weights, data=cfg.data, val_size=cfg.val_size, seed=cfg.seed
    )
    assert splits is not None
    shape = splits.input_shape
    table = traced_cost_table(net, input_shape=shape)
    meta = _meta(net, cfg, shape, "uniform" if cfg.uniform else "ana")
    if cfg.uniform:
        policies = [_uniform_policy(net, table, shape, rate=r, meta=meta) for r in cfg.rates]
    else:
        assert cfg.ana is not None
        policies = [
            _ana_policy(table, ana=cfg.ana, rate=r, threshold=None, model_name=meta["model"], meta=meta)[0]
            for r in cfg.rates
        ]
    if args.resume:
        check_finished_rounds(Path(cfg.out), cfg.rates)  # before config.yaml is rewritten
    run_dir = prepare_run_dir(cfg.out, config=cfg, resume=args.resume, command="iterate")
    base_acc = val_accuracy(net, splits)
    with progress_bar() as bar:
        task = bar.add_task("round 1", total=None, info="")
        state = {"round": 1}

        def on_step(phase: str, done: int, total: int, metrics: dict[str, float]) -> None:
            bar.update(
                task,
                description=f"round {state['round']}/{len(cfg.rates)} {phase}",
                completed=done,
                total=total,
                info=f"loss {metrics['loss']:.3f}",
            )

        def on_round(r: RoundResult) -> None:
            state["round"] = r.round + 1
            for name, record in (("compress", r.compress_summary), ("finetune", r.finetune_summary)):
                if record:
                    bar.console.print(Summary.from_dict(record).table(title=f"round {r.round} {name} summary"))
            bar.console.print(r.line() + (" (done before)" if r.skipped else ""))

        rounds = iterate_rounds(
            model=net,
            data=splits,
            config=cfg,
            policies=policies,
            input_shape=shape,
            run_dir=run_dir,
            teacher=net if cfg.distill else None,
            progress=on_step,
            on_round=on_round,
        )
    from prunegym.workflow.plots import rounds_plot

    records = [r.to_dict() for r in rounds]
    write_json(run_dir / "rounds.json", {"baseline_accuracy": base_acc, "rounds": records})
    plot = rounds_plot(records, run_dir / "rounds.png", baseline_accuracy=base_acc)
    final = rounds[-1]
    assert final.model is not None
    path = save_model(
        run_dir / MODEL_FILE,
        model=final.model,
        policy=dict(final.model.prunegym_policy),
        extra={"input_shape": list(shape)},
    )
    summary = summarize(
        baseline=net,
        compressed=final.model,
        input_shape=shape,
        baseline_accuracy=base_acc,
        compressed_accuracy=final.accuracy,
        accuracy_note=f"val top-1 (n={len(splits.val_y)}); compressed after round {final.round}'s finetune",
        convention=cfg.convention,
        baseline_top5=rounds[0].finetune_summary["baseline_top5"] if rounds[0].finetune_summary else None,
        compressed_top5=final.accuracy_top5,
    )
    write_json(run_dir / "summary.json", summary.to_dict())
    atomic_write_text(run_dir / "summary.md", summary.markdown(title="iterate"))
    for r in rounds:
        stdout.print(r.line())
    _print_summary(summary, title=f"iterate {cfg.model}: {len(rounds)} rounds")
    stdout.print(f"→ {path}, {run_dir / 'rounds.json'}, {plot}")
    return 0


# ----------------------------------------------------------------------------------------------- register


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "ana",
        example=f"prunegym ana {R20} --val-size 1000 --out runs/r20-ana",
    )
    add_config_flags(p, AnaConfig, help=HELP)
    p.add_argument("--resume", action="store_true", help="continue the analysis in --out (skips finished cells)")
    p.set_defaults(func=cmd_ana)

    p = add_command(
        sub,
        "prune",
        example=f"prunegym prune {R20} --ana runs/r20-ana --rate 0.5 --out runs/r20-prune",
    )
    add_config_flags(p, PruneConfig, help=HELP)
    p.add_argument("--overwrite", action="store_true", help="replace a previous prune in --out")
    p.set_defaults(func=cmd_prune)

    p = add_command(
        sub,
        "transform",
        example="prunegym transform --model runs/r20-masked/model.pt --out runs/r20-dense",
    )
    add_config_flags(p, TransformConfig, help=HELP)
    p.add_argument("--overwrite", action="store_true", help="replace a previous transform in --out")
    p.set_defaults(func=cmd_transform)

    p = add_command(
        sub,
        "iterate",
        example=f"prunegym iterate {R20} --uniform --rates 0.1,0.2,0.3 --epochs-per-round 2 --out runs/r20-iter",
    )
    add_config_flags(p, IterateConfig, help=HELP)
    p.add_argument("--resume", action="store_true", help="continue the rounds in --out (skips finished rounds)")
    p.set_defaults(func=cmd_iterate)


__all__ = ["register"]

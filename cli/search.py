"""``prunegym optuna run|best`` and ``prunegym compare``."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from prunegym.cli.env import ENV_HELP
from prunegym.cli.util import add_command, add_config_flags, console, print_json, progress_bar, stdout
from prunegym.core.config import config_to_dict, read_config_file, resolve_config
from prunegym.core.errors import ConfigError, UserError
from prunegym.core.io import write_yaml
from prunegym.core.policy import Policy
from prunegym.env.factory import EnvSpec, build_env

log = logging.getLogger(__name__)

STUDY_HELP = {
    "sampler": "tpe, motpe (multi-objective TPE), nsga2, nsga3, random",
    "objectives": "reward (single) or accuracy,latency / accuracy,macs / accuracy,params (Pareto front)",
    "n_trials": "finished trials this worker runs in total (a rerun continues up to it)",
    "storage": "leave out for study.db in the run folder; 'journal'; FILE.log; or a URL such as "
    "postgresql://user:${PGPASSWORD}@host/db shared by many workers",
    "study_name": "study name in the storage (same name = same study; alias --study)",
    "pruner": "median (stops trials whose finetune accuracy is below the median) or none",
    "n_startup_trials": "random trials before TPE models the space",
    "multivariate": "multivariate TPE (groups interact through the budget)",
    "population_size": "NSGA-II/III generation size",
    "pruner_startup_trials": "trials the pruner lets finish before pruning",
    "pruner_warmup_steps": "finetune steps before a trial may be pruned",
    "heartbeat": "seconds between heartbeats on a shared database (0 = off)",
    "tensorboard": "write TensorBoard scalars under OUT/tensorboard/optuna",
}
_EXTRA_KEYS = {"command", "method", "out"}


# ------------------------------------------------------------------------------------------------ optuna run


def _resolve(args: argparse.Namespace) -> tuple[EnvSpec, Any, Path]:
    from prunegym.search.optuna_study import StudyConfig

    file_values: dict[str, Any] = {}
    if args.config:
        file_values = read_config_file(args.config)
    elif args.resume and args.out and (Path(args.out) / "config.yaml").exists():
        file_values = read_config_file(Path(args.out) / "config.yaml")
    env_keys = {f.name for f in dataclasses.fields(EnvSpec)}
    study_keys = {f.name for f in dataclasses.fields(StudyConfig)}
    unknown = sorted(set(file_values) - env_keys - study_keys - _EXTRA_KEYS)
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(unknown)}; use EnvSpec and study options (see --help)")
    flags = vars(args)
    spec = resolve_config(
        EnvSpec, file_values={k: v for k, v in file_values.items() if k in env_keys}, flag_values=flags
    )
    study = resolve_config(
        StudyConfig, file_values={k: v for k, v in file_values.items() if k in study_keys}, flag_values=flags
    )
    out = args.out or file_values.get("out") or f"runs/optuna-{Path(spec.model).stem}-{study.sampler}-s{spec.seed}"
    return spec, study, Path(out)


def _check_run_dir(run_dir: Path, *, resume: bool) -> None:
    if ((run_dir / "config.yaml").exists() or (run_dir / "study.yaml").exists()) and not resume:
        raise UserError(
            f"run folder {run_dir} already holds a run; pass --resume to continue it or choose another --out"
        )


def _write_config(run_dir: Path, *, spec: EnvSpec, study: Any) -> None:
    from prunegym.search.optuna_storage import redact_url

    path = run_dir / "config.yaml"
    study_dict = config_to_dict(study)
    study_dict["storage"] = redact_url(study.storage) if study.storage else None
    write_yaml(path, {"command": "optuna run", "method": "optuna", **config_to_dict(spec), **study_dict})


def cmd_run(args: argparse.Namespace) -> int:
    import optuna

    from prunegym.search.optuna_study import run_study, summary_dict

    spec, study, run_dir = _resolve(args)
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # the progress bar and our own log lines say enough
    _check_run_dir(run_dir, resume=args.resume)
    enqueue = [dict(Policy.load(p).ratios) for p in args.enqueue or ()]
    env = build_env(spec)
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_config(run_dir, spec=spec, study=study)
    with progress_bar() as bar:
        task = bar.add_task(f"optuna {study.sampler}", total=study.n_trials, info="")

        def progress(done: int, total: int, best: float | None) -> None:
            bar.update(task, completed=done, info="" if best is None else f"best reward {best:.4f}")

        summary = run_study(env=env, config=study, run_dir=run_dir, progress=progress, enqueue=enqueue)
    if args.json:
        print_json(summary_dict(summary))
        return 0
    table = Table(title=f"Optuna {summary.sampler} on {spec.model}: study '{summary.study_name}'", show_header=False)
    table.add_column("", style="bold")
    table.add_column("")
    rows = [
        ("run folder", str(run_dir)),
        ("storage", summary.storage),
        ("objectives", summary.objectives),
        (
            "this worker",
            f"{summary.trials} trials ({summary.complete} complete, {summary.pruned} pruned; "
            f"{summary.resumed_from} from earlier runs)",
        ),
        ("whole study", f"{summary.study_trials} finished trials"),
        (
            "best trial",
            "-"
            if summary.best_trial is None
            else f"#{summary.best_trial}: reward {summary.best_reward:.4f}, val top-1 {summary.best_accuracy:.2f} %",
        ),
        (f"Pareto front ({summary.cost_key})", ", ".join(f"#{n}" for n in summary.pareto) or "-"),
        ("plots", ", ".join(p.name for p in summary.plots) or "-"),
    ]
    for k, v in rows:
        table.add_row(k, v)
    stdout.print(table)
    stdout.print(f"dashboard: optuna-dashboard {summary.storage}")
    stdout.print(f"export:    prunegym optuna best {run_dir} [--max-latency MS | --min-accuracy PCT]")
    return 0


# ------------------------------------------------------------------------------------------------ optuna best


def cmd_best(args: argparse.Namespace) -> int:
    from prunegym.search.optuna_records import trial_policy
    from prunegym.search.optuna_select import select_trial
    from prunegym.search.optuna_study import load_run_study

    run_dir = Path(args.run)
    study, _ = load_run_study(run_dir, storage=args.storage)
    choice = select_trial(study, max_latency=args.max_latency, min_accuracy=args.min_accuracy, max_macs=args.max_macs)
    policy = trial_policy(choice.trial)
    out = Path(args.out) if args.out else run_dir / "selected_policy.yaml"
    policy.save(out)
    attrs = choice.trial.user_attrs
    if args.json:
        print_json(
            {
                "trial": choice.trial.number,
                "reason": choice.reason,
                "policy": str(out),
                **{
                    k: attrs.get(k)
                    for k in ("reward", "accuracy", "macs_ratio", "params_ratio", "latency_ms", "latency_ratio")
                },
            }
        )
        return 0
    table = Table(title=f"trial {choice.trial.number} of study '{study.study_name}': {choice.reason}")
    for col in ("reward", "val top-1 %", "MACs ratio", "params ratio", "latency ms", "latency ratio"):
        table.add_column(col, justify="right")

    def f(key: str, fmt: str) -> str:
        v = attrs.get(key)
        return "-" if v is None else format(float(v), fmt)

    table.add_row(
        f("reward", ".4f"),
        f("accuracy", ".2f"),
        f("macs_ratio", ".3f"),
        f("params_ratio", ".3f"),
        f("latency_ms", ".3f"),
        f("latency_ratio", ".3f"),
    )
    stdout.print(table)
    stdout.print(f"policy written to {out}")
    return 0


# ------------------------------------------------------------------------------------------------ compare


def cmd_compare(args: argparse.Namespace) -> int:
    from prunegym.search.compare import as_dict, compare_runs, plot_compare, problem_differences

    runs, methods = compare_runs(args.runs)
    for key, values in problem_differences(runs).items():
        console.print(
            f"[yellow]warning:[/] runs differ in {key} ({', '.join(map(str, values))}); "
            "their rewards are not comparable"
        )
    png = plot_compare(runs, out=Path(args.plot)) if args.plot else None
    if args.json:
        print_json(as_dict(runs, methods) | {"plot": None if png is None else str(png)})
        return 0
    table = Table(title=f"compare: {len(runs)} run(s), {len(methods)} method(s)")
    for col in ("run", "method", "seed", "evaluations", "best reward", "val top-1 %", "MACs ratio", "latency ratio"):
        table.add_column(col, justify="left" if col in ("run", "method") else "right")

    def num(v: float | None, digits: int) -> str:
        return "-" if v is None else f"{v:.{digits}f}"

    names = [Path(r.run).name for r in runs]
    if len(set(names)) < len(names):
        names = [r.run for r in runs]
    for name, r in zip(names, runs, strict=True):
        table.add_row(
            name,
            r.method,
            "-" if r.seed is None else str(r.seed),
            str(r.evaluations),
            num(r.best_reward, 4),
            num(r.best_accuracy, 2),
            num(r.best_macs_ratio, 3),
            num(r.best_latency_ratio, 3),
        )
    grouped = [m for m in methods if m.runs > 1]
    if grouped:
        table.add_section()
        for m in grouped:
            seeds = ",".join("?" if s is None else str(s) for s in m.seeds)
            table.add_row(
                f"mean ± std ({m.runs} runs)",
                m.method,
                seeds,
                m.evaluations.fmt(1),
                m.best_reward.fmt(4),
                m.best_accuracy.fmt(2),
                m.best_macs_ratio.fmt(3),
                m.best_latency_ratio.fmt(3),
            )
    (stdout if stdout.is_terminal else Console(width=160)).print(table)  # piped or captured: do not wrap
    if png is not None:
        stdout.print(f"plot written to {png}")
    return 0


# ------------------------------------------------------------------------------------------------ register


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(
        sub,
        "optuna",
        help="Optuna baseline: search per-group pruning ratios (TPE, NSGA-II/III, multi-objective TPE)",
        example="prunegym optuna run --model smallcnn --data digits --val-size 300 --n-trials 50 --out runs/optuna-digits",
    )
    osub = p.add_subparsers(dest="optuna_command", metavar="ACTION")
    r = add_command(
        osub,
        "run",
        help="run (or continue) a study; many workers may share one --storage database",
        example="prunegym optuna run --model resnet20 --weights ../shared/data/pretrained/resnet20-12fca82f.th "
        "--data cifar10:../shared/data/cifar-10-batches-py --target-ratio 0.5 --n-trials 300 --out runs/optuna-r20-s0",
    )
    add_config_flags(r, EnvSpec, help=ENV_HELP)
    add_config_flags(r, _study_config(), help=STUDY_HELP, skip=("seed",))
    r.add_argument("--study", dest="study_name", default=argparse.SUPPRESS, help="alias of --study-name")
    r.add_argument("--out", help="run folder (default runs/optuna-<model>-<sampler>-s<seed>)")
    r.add_argument("--resume", action="store_true", help="continue the study of an existing run folder")
    r.add_argument("--enqueue", action="append", metavar="POLICY", help="policy YAML to evaluate first (repeatable)")
    r.add_argument("--json", action="store_true", help="print the summary as JSON")
    r.set_defaults(func=cmd_run)

    b = add_command(
        osub,
        "best",
        help="export the best trial, or the Pareto point a constraint selects, as a policy YAML",
        example="prunegym optuna best runs/optuna-r20-s0 --max-latency 0.8 --out policy.yaml",
    )
    b.add_argument("run", help="run folder of `prunegym optuna run`")
    b.add_argument("--storage", help="storage URL, when the run folder's hides its password or moved")
    b.add_argument("--max-latency", type=float, metavar="MS", help="largest acceptable latency (ms)")
    b.add_argument("--max-macs", type=float, metavar="RATIO", help="largest acceptable MACs ratio")
    b.add_argument("--min-accuracy", type=float, metavar="PCT", help="lowest acceptable val top-1 accuracy (%%)")
    b.add_argument("--out", help="policy YAML to write (default RUN/selected_policy.yaml)")
    b.add_argument("--json", action="store_true", help="print the choice as JSON")
    b.set_defaults(func=cmd_best)
    p.set_defaults(func=lambda a: p.print_help() or 2)

    c = add_command(
        sub,
        "compare",
        help="one table and one plot (best reward vs evaluations) across agent and Optuna runs",
        example="prunegym compare runs/ddpg-s0 runs/ddpg-s1 runs/optuna-s0 runs/optuna-s1 --plot compare.png",
    )
    c.add_argument("runs", nargs="+", help="run folders (each with episodes.jsonl)")
    c.add_argument("--plot", default="compare.png", help="PNG to write ('' for none)")
    c.add_argument("--json", action="store_true", help="print runs and per-method mean ± std as JSON")
    c.set_defaults(func=cmd_compare)


def _study_config() -> type:
    from prunegym.search.optuna_study import StudyConfig

    return StudyConfig

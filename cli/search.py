"""``prunegym optuna run|best`` and ``prunegym compare``."""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from prunegym.cli.util import (
    add_command,
    add_config_flags,
    any_float,
    config_from_args,
    positive_float,
    positive_int,
    print_json,
    progress_bar,
    stdout,
)
from prunegym.core.config import config_to_dict
from prunegym.core.errors import UserError
from prunegym.core.io import read_jsonl
from prunegym.core.policy import Policy
from prunegym.core.run_folder import (
    BEST_POLICY_FILE,
    CONFIG_FILE,
    EPISODES_FILE,
    STUDY_FILE,
    prepare_run_dir,
    refuse_existing_run,
)
from prunegym.env.spec import EnvSpec
from prunegym.search.optuna_config import StudyConfig
from prunegym.search.optuna_storage import redact_url

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OptunaRunConfig:
    """``prunegym optuna run``: the search problem, the study, and the run folder.

    Args:
        problem: the search problem (model, data, evaluator, episode, device latency).
        study: the sampler, objectives, budget and storage.
        out: run folder (default runs/optuna-<model>-<sampler>-s<seed>).
    """

    problem: EnvSpec
    study: StudyConfig = field(default_factory=StudyConfig)
    out: str | None = None

    @property
    def run_dir(self) -> Path:
        stem = Path(self.problem.model).stem
        return Path(self.out or f"runs/optuna-{stem}-{self.study.sampler}-s{self.problem.seed}")


def _resolve(args: argparse.Namespace) -> OptunaRunConfig:
    """The run's options: ``--config`` (or, with ``--resume``, the run folder's own config.yaml) under the flags."""
    return config_from_args(OptunaRunConfig, args)


def optuna_config_values(cfg: OptunaRunConfig) -> dict[str, Any]:
    """What config.yaml records: the options (the storage URL without its password) and the method."""
    values = config_to_dict(cfg)
    values["storage"] = redact_url(cfg.study.storage) if cfg.study.storage else None
    return {"method": "optuna", **values, "out": str(cfg.run_dir)}


def cmd_run(args: argparse.Namespace) -> int:
    cfg = _resolve(args)
    spec, study, run_dir = cfg.problem, cfg.study, cfg.run_dir
    refuse_existing_run(run_dir, resume=args.resume, markers=(CONFIG_FILE, STUDY_FILE))
    done = read_jsonl(run_dir / EPISODES_FILE) if args.resume else []
    if len(done) >= study.n_trials:  # this worker's share is finished: nothing to load
        best = max((r for r in done if r.get("reward") is not None), key=lambda r: r["reward"], default=None)
        tail = "" if best is None else f"; best reward {best['reward']:.4f} at trial {best['episode']}"
        stdout.print(f"{run_dir} already ran {len(done)} trials{tail} → {run_dir / BEST_POLICY_FILE}")
        return 0
    import optuna

    from prunegym.env.factory import build_env
    from prunegym.search.optuna_study import run_study, summary_dict

    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # the progress bar and our own log lines say enough
    enqueue = [Policy.load(p) for p in args.enqueue or ()]
    env = build_env(spec)
    prepare_run_dir(run_dir, config=optuna_config_values(cfg), resume=True, command="optuna run")
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


def cmd_dashboard(args: argparse.Namespace) -> int:
    from prunegym.search.optuna_study import open_run_storage

    try:
        import optuna_dashboard
    except ImportError:
        raise UserError(
            "`prunegym optuna dashboard` needs optuna-dashboard: pip install 'prunegym[dashboard]'"
        ) from None
    storage, meta = open_run_storage(Path(args.run), storage=args.storage)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning(
            "serving the dashboard on %s: anyone who can reach this port sees (and can edit) the study", args.host
        )
    stdout.print(
        f"optuna-dashboard for study '{meta.get('study_name')}' ({meta['storage_display']}) on "
        f"http://{args.host}:{args.port}/ (Ctrl-C stops it)"
    )
    optuna_dashboard.run_server(storage, host=args.host, port=args.port)
    return 0


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
    from prunegym.search.compare import as_dict, compare_runs, plot_compare

    runs, methods = compare_runs(args.runs, allow_mixed=args.allow_mixed)
    png = plot_compare(runs, out=Path(args.plot)) if args.plot else None
    if args.json:
        print_json(as_dict(runs, methods) | {"plot": None if png is None else str(png)})
        return 0
    table = Table(title=f"compare: {len(runs)} run(s), {len(methods)} method(s)")
    for col in (
        "run",
        "method",
        "seed",
        "evaluations",
        "best reward",
        "val top-1 %",
        "MACs ratio",
        "latency ratio",
        "realization",
    ):
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
            num(r.realization, 2),
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
                "",
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
        example="prunegym optuna run --model smallcnn --data digits --val-size 300 --n-trials 50 --out runs/optuna-digits",
    )
    osub = p.add_subparsers(dest="optuna_command", metavar="ACTION")
    r = add_command(
        osub,
        "run",
        help="run a study (continue one with --resume); many workers may share one --storage database",
        example="prunegym optuna run --model resnet20 --weights ../shared/data/pretrained/resnet20-12fca82f.th "
        "--data cifar10:../shared/data/cifar-10-batches-py --target-ratio 0.5 --n-trials 300 --out runs/optuna-r20-s0",
    )
    add_config_flags(r, OptunaRunConfig)
    r.add_argument("--study", dest="study_name", default=argparse.SUPPRESS, help="alias of --study-name")
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
    b.add_argument("--max-latency", type=positive_float, metavar="MS", help="largest acceptable latency (ms)")
    b.add_argument("--max-macs", type=positive_float, metavar="RATIO", help="largest acceptable MACs ratio")
    b.add_argument("--min-accuracy", type=any_float, metavar="PCT", help="lowest acceptable val top-1 accuracy (%%)")
    b.add_argument("--out", help="policy YAML to write (default RUN/selected_policy.yaml)")
    b.add_argument("--json", action="store_true", help="print the choice as JSON")
    b.set_defaults(func=cmd_best)
    d = add_command(
        osub,
        "dashboard",
        help="browse a run's study in optuna-dashboard (loopback only unless --host says otherwise)",
        example="prunegym optuna dashboard runs/optuna-r20",
    )
    d.add_argument("run", help="run folder of `prunegym optuna run`")
    d.add_argument("--storage", help="storage URL, when the run folder's hides its password or moved")
    d.add_argument("--host", default="127.0.0.1", help="address to serve on (loopback by default)")
    d.add_argument("--port", type=positive_int, default=8080, help="port to serve on")
    d.set_defaults(func=cmd_dashboard)
    p.set_defaults(func=lambda a: p.print_help() or 2)

    c = add_command(
        sub,
        "compare",
        example="prunegym compare runs/ddpg-s0 runs/ddpg-s1 runs/optuna-s0 runs/optuna-s1 --plot compare.png",
    )
    c.add_argument("runs", nargs="+", help="run folders (each with episodes.jsonl)")
    c.add_argument("--plot", default="compare.png", help="PNG to write ('' for none)")
    c.add_argument("--json", action="store_true", help="print runs and per-method mean ± std as JSON")
    c.add_argument(
        "--allow-mixed",
        action="store_true",
        help="compare runs of different problems (target, model, evaluator ...), each problem's runs grouped apart",
    )
    c.set_defaults(func=cmd_compare)

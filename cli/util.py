"""Helpers shared by the sub-commands: flags generated from config dataclasses, run folders, rich output."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import types
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import yaml
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from prunegym.core.config import config_to_dict, read_config_file, resolve_config
from prunegym.core.errors import UserError
from prunegym.core.io import write_yaml

C = TypeVar("C")
log = logging.getLogger(__name__)
console = Console(stderr=True)
stdout = Console()


def add_command(sub: argparse._SubParsersAction, name: str, *, help: str, example: str) -> argparse.ArgumentParser:
    from prunegym.cli.main import HelpFormatter

    p = sub.add_parser(
        name, help=help, description=help, epilog=f"example:\n  {example}", formatter_class=HelpFormatter
    )
    p.add_argument("--config", help="YAML file of option: value (flags override it)")
    return p


def add_config_flags(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    help: dict[str, str] | None = None,
    skip: tuple[str, ...] = (),
) -> None:
    """One flag per dataclass field (``--field-name``), typed from its annotation, default shown in help."""
    help = help or {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        ann = hints[f.name]
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        if typing.get_origin(ann) in (typing.Union, types.UnionType) and args:
            ann = args[0]
        default = None if f.default is dataclasses.MISSING else f.default
        text = help.get(f.name, "")
        text = f"{text} (default: {default})" if f.default is not dataclasses.MISSING else f"{text} (required)"
        flag = "--" + f.name.replace("_", "-")
        if ann is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=text)
        elif typing.get_origin(ann) is tuple:
            parser.add_argument(flag, type=str, default=argparse.SUPPRESS, help=text + " (comma-separated)")
        else:
            kind = ann if ann in (int, float) else str
            parser.add_argument(flag, type=kind, default=argparse.SUPPRESS, help=text)


def config_from_args(cls: type[C], args: argparse.Namespace) -> C:
    file_values = read_config_file(args.config) if getattr(args, "config", None) else {}
    return resolve_config(cls, file_values=file_values, flag_values=vars(args))


def prepare_run_dir(out: str | Path, *, config: Any, resume: bool, command: str) -> Path:
    """Create the run folder and write the resolved ``config.yaml``.

    An existing run folder is never overwritten silently: without ``--resume`` that is an error.
    """
    run_dir = Path(out)
    cfg_path = run_dir / "config.yaml"
    cfg = {"command": command, **config_to_dict(config)}
    if cfg_path.exists():
        if not resume:
            raise UserError(
                f"run folder {run_dir} already holds a run; pass --resume to continue it or choose another --out"
            )
        old = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
        changed = sorted(k for k in cfg if old.get(k) != cfg[k])
        if changed:
            log.warning("resuming %s with changed options: %s", run_dir, ", ".join(changed))
    run_dir.mkdir(parents=True, exist_ok=True)
    write_yaml(cfg_path, cfg)
    return run_dir


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2))


@contextmanager
def progress_bar(*, transient: bool = True) -> Iterator[Progress]:
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=transient,
    ) as bar:
        yield bar


def fmt_int(n: int) -> str:
    return f"{n:,}"

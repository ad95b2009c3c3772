"""Helpers shared by the sub-commands: flags generated from config dataclasses, run folders, rich output."""

from __future__ import annotations

import argparse
import json
import logging
import types
import typing
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from prunegym.cli.commands import CONFIG_BACKED
from prunegym.core.config import config_options, read_config_file, resolve_config
from prunegym.core.run_folder import CONFIG_FILE, WRITTEN_KEYS

C = TypeVar("C")
log = logging.getLogger(__name__)
console = Console(stderr=True)
stdout = Console()


def _number(kind: type, minimum: float | None, what: str) -> Any:
    """An argparse ``type`` that parses ``kind`` and refuses values below ``minimum`` (its name in the error)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if minimum is not None and value < minimum:
            raise argparse.ArgumentTypeError(f"{text} is not {what}")
        return value

    parse.__name__ = what  # argparse names the type in some messages
    return parse


positive_int = _number(int, 1, "a positive integer")
nonnegative_int = _number(int, 0, "a non-negative integer")
positive_float = _number(float, 1e-300, "a positive number")
any_float = _number(float, None, "a number")


def positive_int_list(text: str) -> tuple[int, ...]:
    """An argparse ``type``: comma-separated positive integers (``1,2,4``)."""
    parts = [t.strip() for t in text.split(",")]
    if not parts or any(not t.isdigit() or int(t) < 1 for t in parts):
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of positive integers (e.g. 1,2)")
    return tuple(int(t) for t in parts)


def add_command(
    sub: argparse._SubParsersAction, name: str, *, example: str, help: str | None = None
) -> argparse.ArgumentParser:
    """A (sub)command with ``--config``, ``--allow-import`` and an example; a top-level command's help comes from
    :data:`~prunegym.cli.commands.REGISTRY`."""
    from prunegym.cli.commands import command_help
    from prunegym.cli.main import HelpFormatter

    help = help if help is not None else command_help(name)

    p = sub.add_parser(
        name, help=help, description=help, epilog=f"example:\n  {example}", formatter_class=HelpFormatter
    )
    p.add_argument("--config", help="YAML file of option: value (flags override it)")
    p.add_argument(
        "--torch-threads",
        type=positive_int,
        default=argparse.SUPPRESS,
        help="PyTorch intra-op threads of this process (default: 1: on a small shared CPU two threads ran 7-9x "
        "slower than one)",
    )
    p.add_argument(
        "--allow-import",
        action="append",
        metavar="TARGET",
        default=[],
        help="let a model factory named by a checkpoint or run folder (package.module:factory) be imported; "
        "a --model typed here is allowed already (repeatable)",
    )
    return p


def add_config_flags(
    parser: argparse.ArgumentParser,
    cls: type,
    *,
    help: dict[str, str] | None = None,
    skip: tuple[str, ...] = (),
) -> None:
    """One flag per option of config dataclass ``cls`` (``--option-name``; nested configs flattened), typed from
    its annotation, with the help text of the field's ``Args:`` docstring line (``help`` overrides) and its default.
    """
    setattr(parser, CONFIG_BACKED, True)  # it reads --config itself (config_from_args checks the keys)
    help = help or {}
    for opt in config_options(cls).values():
        if opt.name in skip:
            continue
        ann = opt.annotation
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        if typing.get_origin(ann) in (typing.Union, types.UnionType) and args:
            ann = args[0]
        text = (help.get(opt.name) or opt.help).rstrip(".")
        text = f"{text} (required)" if opt.required else f"{text} (default: {opt.default})"
        flag = "--" + opt.name.replace("_", "-")
        if flag in parser._option_string_actions:  # a flag every command has (--torch-threads)
            continue
        if ann is bool:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS, help=text)
        elif typing.get_origin(ann) is tuple:
            parser.add_argument(flag, type=str, default=argparse.SUPPRESS, help=text + " (comma-separated)")
        else:
            kind = {int: _number(int, None, "an integer"), float: any_float}.get(ann, str)
            parser.add_argument(flag, type=kind, default=argparse.SUPPRESS, help=text)


def config_from_args(cls: type[C], args: argparse.Namespace) -> C:
    """The command's config: ``--config`` (or, with ``--resume`` and only ``--out``, the run folder's own
    config.yaml) under the flags typed."""
    file_values: dict[str, Any] = {}
    if getattr(args, "config", None):
        file_values = read_config_file(args.config)
    elif getattr(args, "resume", False) and getattr(args, "out", None) and (Path(args.out) / CONFIG_FILE).exists():
        file_values = read_config_file(Path(args.out) / CONFIG_FILE)
    file_values = {k: v for k, v in file_values.items() if k not in WRITTEN_KEYS}
    return resolve_config(cls, file_values=file_values, flag_values=vars(args))


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

"""The ``prunegym`` command line: one sub-command per job, each with ``--help`` showing an example.

Errors the user can fix (:class:`~prunegym.core.errors.UserError`) print one line and exit with code 2;
``--debug`` shows the traceback. The command families are listed in :data:`REGISTRY`, each a ``cli`` module with
a ``register(subparsers)`` function. A family whose optional dependency is missing (torch, in a deploy-only
environment) still appears: its commands say what to install instead of running.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from prunegym.core.errors import UserError

__all__ = ["REGISTRY", "CommandFamily", "HelpFormatter", "build_parser", "main"]


@dataclass(frozen=True)
class CommandFamily:
    """A ``cli`` module and the top-level commands its ``register(subparsers)`` adds.

    Args:
        module: the module's import name.
        commands: the top-level command names it registers (named here so they show even when it cannot load).
    """

    module: str
    commands: tuple[str, ...]


REGISTRY: tuple[CommandFamily, ...] = (
    CommandFamily("prunegym.cli.model", ("stat", "eval", "train", "finetune")),
    CommandFamily("prunegym.cli.workflow", ("ana", "prune", "transform", "iterate")),
    CommandFamily("prunegym.cli.demo", ("demo",)),
    CommandFamily("prunegym.cli.env", ("env",)),
    CommandFamily("prunegym.cli.latency", ("latency",)),
    CommandFamily("prunegym.cli.agent", ("agent",)),
    CommandFamily("prunegym.cli.search", ("optuna", "compare")),
    CommandFamily("prunegym.cli.replay", ("replay",)),
    CommandFamily("prunegym.cli.deploy", ("deploy",)),
)


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prunegym",
        description="Make trained CNNs smaller and faster for a real device, automatically.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for family in REGISTRY:
        try:
            module = importlib.import_module(family.module)
        except ModuleNotFoundError as exc:
            missing = (exc.name or "").split(".")[0]
            if not missing or missing == "prunegym":
                raise  # our own module is missing: a broken install, not an optional dependency
            _register_unavailable(sub, family, missing=missing)
            continue
        module.register(sub)
    return parser


def _register_unavailable(sub: argparse._SubParsersAction, family: CommandFamily, *, missing: str) -> None:
    """Commands that cannot load: listed in ``--help``, and running one says what to install."""
    logging.getLogger(__name__).debug("%s needs %s, which is not installed", family.module, missing)
    hint = "pip install torch==2.13.0" if missing == "torch" else f"pip install {missing}"

    def unavailable(args: argparse.Namespace) -> int:
        raise UserError(f"`prunegym {args.command}` needs the package '{missing}', which is not installed; {hint}")

    for name in family.commands:
        p = sub.add_parser(name, help=f"(unavailable here: needs {missing})")
        p.add_argument("args", nargs=argparse.REMAINDER, help="ignored")
        p.set_defaults(func=unavailable)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else (logging.WARNING if args.quiet else logging.INFO),
        format="%(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("matplotlib", "PIL", "torch_pruning"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; outputs written so far are intact; rerun with --resume to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

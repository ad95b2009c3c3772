"""The ``prunegym`` command line: one sub-command per job, each with ``--help`` showing an example.

Errors the user can fix (:class:`~prunegym.core.errors.UserError`) print one line and exit with code 2;
``--debug`` shows the traceback. Sub-commands live next to the subsystem they drive and register here.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from prunegym.core.errors import UserError

# Each module exposes register(subparsers); a missing one is simply absent from --help.
COMMAND_MODULES = (
    "prunegym.cli.model",
    "prunegym.cli.workflow",
    "prunegym.cli.demo",
    "prunegym.cli.env",
    "prunegym.cli.latency",
    "prunegym.cli.agent",
    "prunegym.cli.search",
    "prunegym.cli.deploy",
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
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            if exc.name == "torch":  # a deploy-only environment: ONNX Runtime commands still work
                logging.getLogger(__name__).debug("skipping %s: torch is not installed", name)
                continue
            raise
        module.register(sub)
    return parser


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

"""The ``prunegym`` command line: one sub-command per job, each with ``--help`` showing an example.

Errors the user can fix (:class:`~prunegym.core.errors.UserError`) print one line and exit with code 2;
``--debug`` shows the traceback. The command families are listed in :data:`~prunegym.cli.commands.REGISTRY`, each a ``cli`` module
with a ``register(subparsers)`` function. Only the family of the command being run is imported, so ``--help``,
``--version`` and argument errors answer without importing torch. A family whose optional dependency is missing
(torch, in a deploy-only environment) still appears: its commands say what to install instead of running.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import typing
from collections.abc import Sequence

from prunegym.cli.commands import CONFIG_BACKED, REGISTRY, CommandFamily, family_of
from prunegym.core.config import read_config_file
from prunegym.core.errors import ConfigError, UserError
from prunegym.core.user_models import allowed_factories, is_factory_spec

__all__ = ["REGISTRY", "CommandFamily", "HelpFormatter", "build_parser", "main"]


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


class Parser(argparse.ArgumentParser):
    """argparse with the house rule for bad input: one line on stderr naming the problem, exit code 2."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


_ALL = "*"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("prunegym")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


def build_parser(command: str | None = _ALL) -> argparse.ArgumentParser:
    """The parser; ``command`` (a top-level command name) loads only that command's family and lists the others
    from the registry, ``None`` loads none (``--help``, ``--version``), the default loads every family."""
    parser = Parser(
        prog="prunegym",
        description="Make trained CNNs smaller and faster for a real device, automatically.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"prunegym {_version()}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    parser.add_argument("--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for family in REGISTRY:
        if command != _ALL and command not in family.names:
            for name, text in family.commands:  # listed, not loaded: never run in this process
                sub.add_parser(name, help=text)
            continue
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

    for name in family.names:
        p = sub.add_parser(name, help=f"(unavailable here: needs {missing})")
        p.add_argument("args", nargs=argparse.REMAINDER, help="ignored")
        p.set_defaults(func=unavailable)


def _typed_factories(argv: Sequence[str]) -> list[str]:
    """The model factories the user typed: ``--model SPEC`` (not one from a --config file) and ``--allow-import``."""
    out = []
    for i, tok in enumerate(argv):
        for flag in ("--model", "--allow-import"):
            if tok == flag and i + 1 < len(argv):
                out.append(argv[i + 1])
            elif tok.startswith(flag + "="):
                out.append(tok.split("=", 1)[1])
    return [s for s in out if is_factory_spec(s)]


def _flag_value(argv: Sequence[str], flag: str) -> str | None:
    for i, tok in enumerate(argv):
        if tok == flag and i + 1 < len(argv):
            return argv[i + 1]
        if tok.startswith(flag + "="):
            return tok.split("=", 1)[1]
    return None


def _leaf_parser(parser: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.ArgumentParser | None:
    """The (sub)parser of the command ``argv`` names (``agent train`` → train's parser)."""
    leaf, found = parser, False
    for tok in argv:
        subs = [a for a in leaf._actions if isinstance(a, argparse._SubParsersAction)]
        if not subs:
            break
        if tok in subs[0].choices:
            leaf, found = subs[0].choices[tok], True
    return leaf if found else None


_NOT_FROM_FILE = {"help", "config", "allow_import", "func"}


def _apply_config_file(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """Make a command's ``--config FILE`` the defaults of its plain argparse options (flags still override).

    Commands whose options come from a config dataclass (marked by :func:`~prunegym.cli.util.add_config_flags`)
    read the file themselves
    (:func:`~prunegym.cli.util.config_from_args`, which also checks its keys); for the others the file's keys
    must be the command's options (positionals included), with one line naming any other.
    """
    path = _flag_value(argv, "--config")
    leaf = _leaf_parser(parser, argv) if path else None
    if leaf is None or path is None:
        return
    if getattr(leaf, CONFIG_BACKED, False):
        return
    actions = [a for a in leaf._actions if a.dest not in _NOT_FROM_FILE]
    values = read_config_file(path)
    by_dest = {a.dest: a for a in actions}
    unknown = sorted(set(values) - set(by_dest))
    if unknown:
        raise ConfigError(
            f"config file {path} has option(s) {', '.join(unknown)} that `{leaf.prog}` does not take; "
            f"its options: {', '.join(sorted(by_dest))}"
        )
    for dest, value in values.items():
        action = by_dest[dest]
        if isinstance(value, str) and callable(action.type):
            try:
                value = action.type(value)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"config file {path}: {dest}: {exc}") from exc
        action.required = False
        if not action.option_strings and action.nargs is None:
            action.nargs = "?"  # a positional the file provides
        action.default = value


def _set_torch_threads(n: int | None) -> None:
    """One PyTorch thread unless ``--torch-threads`` or ``OMP_NUM_THREADS`` says otherwise (two threads on a busy
    2-core machine ran 7-9x slower than one). PyTorch is imported by the command itself, later: it reads
    ``OMP_NUM_THREADS`` then; a torch already imported is told directly."""
    import os

    if n is not None:
        os.environ["OMP_NUM_THREADS"] = str(n)
    else:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def _command_of(argv: Sequence[str]) -> str | None:
    """The top-level command ``argv`` runs (its first non-option token, when that names one), if any."""
    first = next((tok for tok in argv if not tok.startswith("-")), None)
    return first if first is not None and family_of(first) is not None else None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_command_of(argv))
    try:
        _apply_config_file(parser, argv)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
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
    _set_torch_threads(getattr(args, "torch_threads", None))
    try:
        with allowed_factories(_typed_factories(argv)):
            return int(args.func(args) or 0)
    except UserError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader went away (`prunegym stat --json | head`): not an error of ours
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("interrupted; outputs written so far are intact; rerun with --resume to continue", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""Bring-your-own models: ``package.module:factory`` or ``path/to/file.py:factory``, with keyword arguments.

A spec is ``TARGET[?key=value&key=value]``: ``mypkg.nets:make_net?width=2&depth=3`` or
``models/net.py:build?num_classes=100``. Values are YAML scalars (numbers, booleans, strings), nothing else.

Importing a module runs its code, so a spec is imported only when the *user* chose it: the CLI allows what was
typed on its command line (``--model SPEC`` or ``--allow-import TARGET``), Python code calls
:func:`allow_factory` or passes ``allow_import=True``. A spec read from a data file (a checkpoint's ``model``
field, a run folder's ``config.yaml``, a ``--config`` file) is refused with a one-line error that says how to
allow it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from prunegym.core.errors import UserError

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "allow_factory",
    "allowed_factories",
    "is_factory_spec",
    "make_user_model",
    "parse_factory_spec",
]

_ALLOWED: set[str] = set()


def is_factory_spec(name: str) -> bool:
    """Whether ``name`` names a factory (``TARGET:factory``) rather than a zoo model or a saved model."""
    return ":" in name.partition("?")[0]


def parse_factory_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """``(target, kwargs)`` of ``TARGET:factory[?k=v&...]``.

    Raises:
        UserError: no factory name, a malformed ``k=v`` pair, or a value that is not a scalar.
    """
    target, _, query = spec.partition("?")
    module, _, attr = target.rpartition(":")
    if not module or not attr.isidentifier():
        raise UserError(f"model spec '{spec}' wants package.module:factory or path/to/file.py:factory")
    kwargs: dict[str, Any] = {}
    for pair in filter(None, query.split("&")):
        key, eq, raw = pair.partition("=")
        if not eq or not key.isidentifier():
            raise UserError(f"model spec '{spec}': '{pair}' is not key=value (e.g. {target}?width=2)")
        value = yaml.safe_load(raw) if raw else ""
        if not isinstance(value, (bool, int, float, str)) or value is None:
            raise UserError(f"model spec '{spec}': {key} must be a number, a boolean or a string")
        kwargs[key] = value
    return target, kwargs


def _key(target: str) -> str:
    module, _, attr = target.rpartition(":")
    if module.endswith(".py"):
        module = str(Path(module).expanduser().resolve())
    return f"{module}:{attr}"


def allow_factory(spec: str) -> None:
    """Let :func:`make_user_model` import ``spec``'s target (its keyword arguments may differ)."""
    _ALLOWED.add(_key(parse_factory_spec(spec)[0]))


@contextlib.contextmanager
def allowed_factories(specs: Iterable[str]) -> Iterator[None]:
    """Allow ``specs`` inside the block only (the CLI wraps one command in it)."""
    before = set(_ALLOWED)
    try:
        for s in specs:
            allow_factory(s)
        yield
    finally:
        _ALLOWED.clear()
        _ALLOWED.update(before)


def _load_module(module: str, spec: str) -> Any:
    if module.endswith(".py"):
        path = Path(module).expanduser()
        if not path.is_file():
            raise UserError(f"model file {path} (from --model {spec}) does not exist")
        name = "prunegym_user_model_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
        if name in sys.modules:
            return sys.modules[name]
        loader = importlib.util.spec_from_file_location(name, path)
        if loader is None or loader.loader is None:
            raise UserError(f"cannot load {path} as a Python module (from --model {spec})")
        mod = importlib.util.module_from_spec(loader)
        sys.modules[name] = mod
        loader.loader.exec_module(mod)
        return mod
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise UserError(
            f"cannot import module '{module}' for --model {spec}: {exc}; make it importable "
            "(run from its folder, or set PYTHONPATH=/path/to/its/parent)"
        ) from exc


def make_user_model(spec: str, *, allow_import: bool = False, source: str = "--model") -> nn.Module:
    """Import ``spec``'s factory and call it with the spec's keyword arguments.

    Args:
        spec: ``TARGET:factory[?k=v&...]``.
        allow_import: import even when ``spec`` was not allowed (:func:`allow_factory`).
        source: where the spec came from, for the error message.

    Returns:
        The model.

    Raises:
        UserError: a spec that was not allowed, an import failure, a factory that is not callable or does not
            return a ``torch.nn.Module``, or a factory that rejects the keyword arguments.
    """
    target, kwargs = parse_factory_spec(spec)
    if not allow_import and _key(target) not in _ALLOWED:
        raise UserError(
            f"{source} names model factory '{target}', which would run its code; prunegym imports a factory only "
            f"when you name it: pass --allow-import {target} if you trust it"
        )
    module, _, attr = target.rpartition(":")
    factory: Callable[..., Any] | None = getattr(_load_module(module, spec), attr, None)
    if not callable(factory):
        raise UserError(f"'{attr}' in '{module}' is not a callable; --model wants package.module:factory")
    try:
        model = factory(**kwargs)
    except TypeError as exc:
        raise UserError(f"factory {target} rejected the arguments of '{spec}': {exc}") from exc
    from torch import nn  # lazily: the CLI checks specs before it imports torch

    if not isinstance(model, nn.Module):
        raise UserError(f"factory {target} returned {type(model).__name__}, not a torch.nn.Module")
    return model

"""Packages whose public names load on first use, so that importing the package stays cheap (no PyTorch,
Gymnasium or stable-baselines3 until a name that needs them is touched)."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_attributes"]


def lazy_attributes(package: str, where: Mapping[str, str]) -> Callable[[str], Any]:
    """A module-level ``__getattr__`` for ``package``: each name in ``where`` is imported from its module on first
    use and kept on the package, so later look-ups skip this function.

    Args:
        package: the package's ``__name__``.
        where: public name → module: dotted names are absolute, plain ones are submodules of ``package``.

    Returns:
        The function to assign to the package's ``__getattr__``.
    """

    def __getattr__(name: str) -> Any:
        target = where.get(name)
        if target is None:
            raise AttributeError(f"module '{package}' has no attribute '{name}'")
        module = importlib.import_module(target if "." in target else f"{package}.{target}")
        value = getattr(module, name)
        setattr(sys.modules[package], name, value)
        return value

    return __getattr__

"""Command configs as frozen dataclasses, resolved from defaults ← a YAML file ← command-line flags.

In the spirit of Vitis-AI's ``config.prototxt``: every command accepts ``--config file.yaml`` whose keys are the
command's option names (``workspace`` is accepted for ``out``, hyphens for underscores). The resolved config
is written into the run folder as ``config.yaml``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from prunegym.core.errors import ConfigError

C = TypeVar("C")

ALIASES = {"workspace": "out"}


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}; check --config")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}; fix the syntax") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must be a mapping of option: value, not a {type(data).__name__}")
    return {ALIASES.get(str(k).replace("-", "_"), str(k).replace("-", "_")): v for k, v in data.items()}


def _coerce(name: str, value: Any, annotation: Any) -> Any:
    if isinstance(annotation, str):
        annotation = eval(annotation, vars(typing), {})
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None:
            return None
        return _coerce(name, value, args[0])
    if origin is tuple:
        items = value.split(",") if isinstance(value, str) else list(value)
        (inner, *_) = typing.get_args(annotation) or (str,)
        return tuple(_coerce(name, v, inner) for v in items)
    try:
        if annotation is bool:
            if isinstance(value, str):
                if value.lower() in {"1", "true", "yes", "on"}:
                    return True
                if value.lower() in {"0", "false", "no", "off"}:
                    return False
                raise ValueError(value)
            return bool(value)
        if annotation in (int, float, str):
            if annotation is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return annotation(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"config option '{name}' = {value!r} is not a valid {annotation.__name__}") from exc
    return value


def resolve_config(cls: type[C], *, file_values: dict[str, Any], flag_values: dict[str, Any]) -> C:
    """Build ``cls`` from its defaults, then ``file_values``, then ``flag_values`` (flags win)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(file_values) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(fields))}")
    merged = {**file_values, **{k: v for k, v in flag_values.items() if k in fields}}
    hints = typing.get_type_hints(cls)
    kwargs = {k: _coerce(k, v, hints[k]) for k, v in merged.items()}
    missing = [
        n
        for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"missing required option(s) {', '.join('--' + m.replace('_', '-') for m in missing)}")
    return cls(**kwargs)


def config_to_dict(cfg: Any) -> dict[str, Any]:
    def plain(v: Any) -> Any:
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, Path):
            return str(v)
        return v

    return {k: plain(v) for k, v in dataclasses.asdict(cfg).items()}


def dump_config(cfg: Any) -> str:
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)

"""Command configs as frozen dataclasses, resolved from defaults ← a YAML file ← command-line flags.

In the spirit of Vitis-AI's ``config.prototxt``: every command accepts ``--config file.yaml`` whose keys are the
command's option names (``workspace`` is accepted for ``out``, hyphens for underscores). The resolved config
is written into the run folder as ``config.yaml``.

Configs compose: a field whose type is itself a config dataclass (``EnvSpec.evaluator: EvaluatorConfig``) is
*nested*, and its fields are options of the outer config under their own names, so every option is declared once,
in the dataclass that uses it, with its help text in that class's ``Args:`` docstring. Files and flags stay flat
(``val_size: 1000``, ``--val-size 1000``). A name declared in two nested configs (``seed``) is one option that
sets both. A field with ``metadata={"option": False}`` is not an option (it keeps its default).
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from prunegym.core.errors import ConfigError

__all__ = [
    "ALIASES",
    "Option",
    "config_options",
    "config_to_dict",
    "field_help",
    "read_config_file",
    "resolve_config",
]

C = TypeVar("C")

ALIASES = {"workspace": "out"}


@dataclass(frozen=True)
class Option:
    """One flat option of a (possibly nested) config dataclass.

    Args:
        name: the option's name (the field name; ``--name-with-hyphens`` on the command line).
        annotation: the field's resolved type.
        default: the field's default (``dataclasses.MISSING`` when required).
        help: the help text from the declaring class's ``Args:`` docstring ('' when absent).
        paths: where the option lives, each a tuple of field names from the outer config (several when shared).
    """

    name: str
    annotation: Any
    default: Any
    help: str
    paths: tuple[tuple[str, ...], ...]

    @property
    def required(self) -> bool:
        return self.default is dataclasses.MISSING


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The options of a YAML config file, keys normalized (hyphens to underscores, aliases applied).

    Raises:
        ConfigError: the file is missing, not YAML, or not a mapping.
    """
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
    data = {k: v for k, v in data.items() if k != "command"}  # what a run folder's config.yaml records first
    return {ALIASES.get(str(k).replace("-", "_"), str(k).replace("-", "_")): v for k, v in data.items()}


def _nested_class(annotation: Any) -> type | None:
    return annotation if isinstance(annotation, type) and dataclasses.is_dataclass(annotation) else None


_ARGS_LINE = re.compile(r"^(\s*)(\w+)(?: \([^)]*\))?: (.*)$")


def field_help(cls: type) -> dict[str, str]:
    """Per-field help texts from the ``Args:`` sections of the Google-style docstrings of ``cls`` and its bases
    (a subclass that only changes defaults inherits its base's texts)."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is not object:
            out.update(_own_field_help(klass))
    return out


def _own_field_help(cls: type) -> dict[str, str]:
    doc = inspect.cleandoc(cls.__dict__.get("__doc__") or "")
    lines = doc.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() in ("Args:", "Attributes:"))
    except StopIteration:
        return {}
    out: dict[str, str] = {}
    name, indent = None, None
    for line in lines[start + 1 :]:
        if not line.strip():
            name = None
            continue
        m = _ARGS_LINE.match(line)
        if m and (indent is None or len(m.group(1)) == indent):
            indent = len(m.group(1))
            name = m.group(2)
            out[name] = m.group(3).strip()
        elif name is not None and indent is not None and len(line) - len(line.lstrip()) > indent:
            out[name] += " " + line.strip()
        elif not line.startswith(" "):
            break  # the next section
    return out


def _walk(cls: type, prefix: tuple[str, ...]) -> Iterator[tuple[str, Any, Any, str, tuple[str, ...]]]:
    hints = typing.get_type_hints(cls)
    helps = field_help(cls)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if not f.metadata.get("option", True):
            continue
        annotation = hints[f.name]
        nested = _nested_class(annotation)
        if nested is not None:
            yield from _walk(nested, (*prefix, f.name))
            continue
        default = f.default
        if default is dataclasses.MISSING and f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        yield f.name, annotation, default, helps.get(f.name, ""), (*prefix, f.name)


def config_options(cls: type) -> dict[str, Option]:
    """The flat options of config dataclass ``cls``, in declaration order (nested configs expanded in place).

    Raises:
        TypeError: a name declared twice with different types (a programming error).
    """
    options: dict[str, Option] = {}
    for name, annotation, default, help_text, path in _walk(cls, ()):
        if name in options:
            seen = options[name]
            if seen.annotation != annotation:
                raise TypeError(f"{cls.__name__}: option {name!r} is declared as {seen.annotation} and {annotation}")
            options[name] = dataclasses.replace(seen, paths=(*seen.paths, path), help=seen.help or help_text)
        else:
            options[name] = Option(name=name, annotation=annotation, default=default, help=help_text, paths=(path,))
    return options


def _coerce(name: str, value: Any, annotation: Any) -> Any:
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


def _build(cls: type[C], values: Mapping[tuple[str, ...], Any], prefix: tuple[str, ...]) -> C:
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        path = (*prefix, f.name)
        nested = _nested_class(hints[f.name])
        if nested is not None and f.metadata.get("option", True):
            kwargs[f.name] = _build(nested, values, path)
        elif path in values:
            kwargs[f.name] = values[path]
    return cls(**kwargs)


def resolve_config(cls: type[C], *, file_values: Mapping[str, Any], flag_values: Mapping[str, Any]) -> C:
    """Build ``cls`` from its defaults, then ``file_values``, then ``flag_values`` (flags win).

    Both mappings are flat (option name to value); nested configs are built from their options. Keys of
    ``flag_values`` that are not options are ignored (an argparse namespace holds more); unknown keys of
    ``file_values`` are an error.

    Raises:
        ConfigError: an unknown key in the file, a value of the wrong type, or a required option missing.
    """
    options = config_options(cls)
    unknown = sorted(set(file_values) - set(options))
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(options))}")
    merged = {**file_values, **{k: v for k, v in flag_values.items() if k in options}}
    missing = [n for n, o in options.items() if n not in merged and o.required]
    if missing:
        raise ConfigError(f"missing required option(s) {', '.join('--' + m.replace('_', '-') for m in missing)}")
    by_path = {
        path: _coerce(name, value, options[name].annotation)
        for name, value in merged.items()
        for path in options[name].paths
    }
    return _build(cls, by_path, ())


def _plain(v: Any) -> Any:
    if isinstance(v, tuple | list):
        return [_plain(x) for x in v]
    if isinstance(v, Path):
        return str(v)
    return v


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """The flat ``{option: value}`` of a config dataclass (nested configs flattened; a shared option once)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type) and f.metadata.get("option", True):
            for k, v in config_to_dict(value).items():
                out.setdefault(k, v)
        elif f.metadata.get("option", True):
            out.setdefault(f.name, _plain(value))
    return out

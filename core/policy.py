"""Pruning policies: ``{group name: ratio}`` plus metadata, saved as versioned YAML.

A ratio is the fraction of a prunable group's output channels that is removed (Torch-Pruning semantics), so
0.0 keeps the group intact and 0.5 halves it; the exact channel count is :func:`prunegym.core.pruning.
kept_channels`. Group names are the stable module names of the groups' root layers (``layer2.0.conv1``).

A policy is the hand-off between search and deploy, and (through :meth:`Policy.to_dict`) the structure record
stored inside saved pruned models: ``round_to`` and ``input_shape`` are part of it so that a pruned model can be
rebuilt from its base architecture exactly, without data.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from prunegym.core.errors import UserError
from prunegym.core.io import write_yaml

POLICY_VERSION = 1


class PolicyError(UserError, ValueError):
    """A policy that names unknown groups, holds a ratio outside [0, 1), or cannot be read."""


def _check_ratio(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PolicyError(f"policy ratio for '{key}' is {value!r}, not a number; use a fraction in [0, 1)")
    ratio = float(value)
    if math.isnan(ratio):
        raise PolicyError(f"policy ratio for '{key}' is NaN; use a fraction in [0, 1)")
    if not 0.0 <= ratio < 1.0:
        raise PolicyError(f"policy ratio for '{key}' is {ratio}, outside [0, 1); use a fraction in [0, 1)")
    return ratio


def _optional_float(name: str, value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PolicyError(f"policy field '{name}' is {value!r}, not a number; fix or remove it")
    return float(value)


@dataclass(frozen=True)
class Policy:
    """Per-group pruning ratios and where they came from.

    ``ratios`` maps group names to the fraction of output channels removed; groups not named keep all
    channels. ``removed`` names the residual blocks removed outright (depth pruning, ``layer1.3``); ratios of
    groups inside them are ignored. ``round_to`` is the channel multiple the pruner rounds to; ``input_shape`` (C, H, W) the input the
    groups were traced with. ``metrics`` holds free figures (``macs_ratio``, ``latency_ms``, ...).
    The mappings are read-only; use :func:`dataclasses.replace` or :meth:`with_metrics` to derive new policies.
    Frozen but not hashable (it holds mappings): use :meth:`cache_key` as a dictionary key.
    """

    ratios: Mapping[str, float]
    source: str = "manual"
    model: str = ""
    round_to: int = 1
    criterion: str = "l1"
    input_shape: tuple[int, int, int] | None = None
    reward: float | None = None
    accuracy: float | None = None
    episode: int | None = None
    trial: int | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    removed: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.ratios, Mapping):
            raise PolicyError(
                f"policy ratios must be a mapping of group name to ratio, got {type(self.ratios).__name__}"
            )
        ratios = {str(k): _check_ratio(str(k), v) for k, v in self.ratios.items()}
        object.__setattr__(self, "ratios", MappingProxyType(ratios))
        metrics = {str(k): float(v) for k, v in dict(self.metrics).items()}
        object.__setattr__(self, "metrics", MappingProxyType(metrics))
        if isinstance(self.round_to, bool) or not isinstance(self.round_to, int) or self.round_to < 1:
            raise PolicyError(f"policy round_to is {self.round_to!r}; use a positive integer such as 1 or 8")
        if self.input_shape is not None:
            shape = tuple(int(s) for s in self.input_shape)
            if len(shape) != 3 or min(shape) < 1:
                raise PolicyError(f"policy input_shape is {self.input_shape!r}; use [C, H, W], e.g. [3, 32, 32]")
            object.__setattr__(self, "input_shape", shape)
        if isinstance(self.removed, str) or not all(isinstance(b, str) and b for b in self.removed):
            raise PolicyError(f"policy removed is {self.removed!r}; use a list of block names such as [layer1.3]")
        object.__setattr__(self, "removed", tuple(dict.fromkeys(self.removed)))
        object.__setattr__(self, "reward", _optional_float("reward", self.reward))
        object.__setattr__(self, "accuracy", _optional_float("accuracy", self.accuracy))

    # ------------------------------------------------------------------ queries

    def ratio(self, group: str) -> float:
        """The ratio for ``group`` (0.0 when the policy does not name it)."""
        return self.ratios.get(group, 0.0)

    def validate(self, group_names: Iterable[str]) -> Policy:
        """Check every key names one of ``group_names``; raise :class:`PolicyError` (a ValueError) otherwise.

        The message names the first unknown key and suggests the closest group names. Returns ``self``.
        """
        names = list(group_names)
        known = set(names)
        for key, value in self.ratios.items():
            if key not in known:
                close = difflib.get_close_matches(key, names, n=3, cutoff=0.5)
                hint = (
                    f"did you mean {', '.join(repr(c) for c in close)}?" if close else "list them with `prunegym stat`"
                )
                raise PolicyError(f"policy names unknown group '{key}' for this model; {hint}")
            _check_ratio(key, value)
        return self

    def cache_key(self, *, digits: int = 6) -> tuple[tuple[str, float | str], ...]:
        """A hashable key of the non-zero ratios (rounded) and the removed blocks, for evaluation caches."""
        ratios = tuple(sorted((k, round(v, digits)) for k, v in self.ratios.items() if round(v, digits) != 0.0))
        return ratios + tuple(("removed", b) for b in sorted(self.removed))

    def with_metrics(self, **metrics: float) -> Policy:
        """A copy with ``metrics`` merged in."""
        return replace(self, metrics={**self.metrics, **metrics})

    @classmethod
    def uniform(cls, group_names: Iterable[str], ratio: float, **meta: Any) -> Policy:
        """The same ``ratio`` for every group."""
        return cls(ratios={name: ratio for name in group_names}, **meta)

    # ------------------------------------------------------------------ (de)serialization

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML/JSON-safe dict with ``version``; ``ratios`` last so the file reads top-down."""
        out: dict[str, Any] = {"version": POLICY_VERSION}
        for f in fields(self):
            if f.name in ("ratios", "metrics"):
                continue
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        out["metrics"] = dict(self.metrics)
        out["ratios"] = dict(self.ratios)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "policy") -> Policy:
        """Inverse of :meth:`to_dict`; ``version`` must be 1 (a dict without one is read as version 1)."""
        if not isinstance(data, Mapping):
            raise PolicyError(f"{source} is a {type(data).__name__}, not a mapping; write 'ratios: {{group: ratio}}'")
        data = dict(data)
        version = data.pop("version", POLICY_VERSION)
        if version != POLICY_VERSION:
            raise PolicyError(f"{source} has policy version {version!r}; this prunegym reads version {POLICY_VERSION}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PolicyError(f"{source} has unknown field '{unknown[0]}'; known fields: {', '.join(sorted(known))}")
        if "ratios" not in data:
            raise PolicyError(f"{source} has no 'ratios'; write 'ratios: {{group: ratio}}'")
        ratios = data.pop("ratios") or {}
        if not isinstance(ratios, Mapping):
            raise PolicyError(f"{source} 'ratios' is a {type(ratios).__name__}; write 'ratios: {{group: ratio}}'")
        metrics = data.pop("metrics", None) or {}
        if not isinstance(metrics, Mapping):
            raise PolicyError(f"{source} 'metrics' is a {type(metrics).__name__}, not a mapping of name to number")
        shape = data.pop("input_shape", None)
        removed = data.pop("removed", None) or ()
        if isinstance(removed, str) or not isinstance(removed, list | tuple):
            raise PolicyError(f"{source} 'removed' is {removed!r}; write a list of block names, e.g. [layer1.3]")
        try:
            return cls(
                ratios=dict(ratios),
                metrics={str(k): float(v) for k, v in metrics.items()},
                input_shape=tuple(shape) if shape is not None else None,
                removed=tuple(removed),
                **data,
            )
        except (TypeError, ValueError) as exc:
            if isinstance(exc, PolicyError):
                raise
            raise PolicyError(f"{source} is not a valid policy: {exc}; compare with a saved best_policy.yaml") from exc

    def save(self, path: Path | str) -> Path:
        """Write the policy as YAML, atomically."""
        return write_yaml(Path(path), self.to_dict())

    @classmethod
    def load(cls, path: Path | str) -> Policy:
        """Read a policy written by :meth:`save` (or by hand)."""
        path = Path(path)
        if not path.is_file():
            raise PolicyError(f"policy file not found: {path}; check the path (e.g. runs/<name>/best_policy.yaml)")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PolicyError(f"cannot parse policy {path}: {first}; fix the YAML syntax") from exc
        return cls.from_dict(data, source=str(path))

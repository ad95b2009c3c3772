"""The latency table: its identity (model, device, search space), per-layer entries, JSON format and checks.

Tables are JSON, one per model *and* device: loading one profiled for another architecture, input size,
execution provider, thread count, batch, CPU or onnxruntime version raises a one-line :class:`UserError`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from prunegym.core.errors import UserError
from prunegym.core.io import write_json
from prunegym.core.models import model_info
from prunegym.core.onnxrt import LatencyConfig, host_record
from prunegym.env.latency.grids import group_counts

__all__ = [
    "DEVICE_KEYS",
    "FORMAT",
    "REBUILD",
    "VERSION",
    "LatencyTable",
    "LayerEntry",
    "architecture_hash",
    "device_info",
    "model_name",
]

FORMAT = "prunegym-latency-table"
VERSION = 1
REBUILD = "rebuild it with `prunegym latency build`"
DEVICE_KEYS = (
    "runtime",
    "runtime_version",
    "provider",
    "threads",
    "batch_size",
    "graph_optimization",
    "cpu",
    "onnxruntime",
)
# what a table made before the runtime choice holds for the keys it lacks
_OLD_DEFAULTS = {"runtime": "ort"}


def device_info(*, config: LatencyConfig, host: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What makes a latency table valid on a machine, built from a host record (this machine's, or the one a remote
    device worker registered).

    Args:
        config: the runtime, provider, threads, batch and graph optimization the table is (or was) measured with.
        host: a :func:`~prunegym.core.onnxrt.host_record` (default: this machine's, for ``config``'s runtime); a
            remote device's also gives the threads and runtime.

    Returns:
        Runtime and its version, provider, threads, batch, graph optimization, CPU name and onnxruntime version
        (compared, see :data:`DEVICE_KEYS`), plus ``cpu_flags``, ``machine``, ``cpus`` (recorded, not compared)
        and, for a remote device, its ``hostname``.
    """
    remote = host is not None
    host = dict(host) if host is not None else host_record(runtime=config.runtime, provider=config.provider)
    out = {
        "runtime": host["runtime"],
        "runtime_version": host["runtime_version"],
        "provider": host["provider"],
        "threads": int(host["threads"]) if remote else int(config.intra_op_threads),
        "batch_size": int(config.batch_size),
        "graph_optimization": config.graph_optimization,
        "cpu": host["cpu"],
        "cpu_flags": list(host["cpu_flags"]),
        "onnxruntime": host["onnxruntime"],
        "machine": host["arch"],
        "cpus": host["cpus"],
    }
    if remote:
        out["hostname"] = host.get("hostname")
    return out


def architecture_hash(model: nn.Module, *, input_shape: Sequence[int]) -> str:
    """A short hash of the model's module tree (names, types, hyper-parameters), tensor shapes and input shape.

    Weights do not enter it: a table holds for any weights of one architecture.

    Args:
        model: the model.
        input_shape: C×H×W of one input.

    Returns:
        16 hex digits.
    """
    modules = [[n, type(m).__qualname__, m.extra_repr()] for n, m in model.named_modules()]
    state = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    blob = json.dumps({"modules": modules, "state": state, "input": [int(s) for s in input_shape]})
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def model_name(model: nn.Module) -> str:
    """The zoo name of a model, else its class name."""
    info = model_info(model)
    return info.name if info else type(model).__name__


def _shape_text(shape: Sequence[int]) -> str:
    return "×".join(str(int(s)) for s in shape)


@dataclass(frozen=True)
class LayerEntry:
    """One conv/linear layer: how its channel counts follow the groups, and which counts were profiled.

    Attributes:
        name: the layer's module name.
        signature: the key of its shape signature in :attr:`LatencyTable.signatures`.
        in_features: unpruned input channels (features).
        out_features: unpruned output channels (features).
        in_groups: (group, features it owns) of the groups that shrink the input side.
        out_group: (group, features it owns) of the group that shrinks the output side, or None.
        in_axis: the profiled input counts, ascending.
        out_axis: the profiled output counts, ascending.
        diagonal: a depthwise conv (cin == cout, one axis).
    """

    name: str
    signature: str
    in_features: int
    out_features: int
    in_groups: tuple[tuple[str, int], ...]
    out_group: tuple[str, int] | None
    in_axis: tuple[int, ...]
    out_axis: tuple[int, ...]
    diagonal: bool

    def points(self) -> list[tuple[int, int]]:
        """Every profiled (cin, cout) pair."""
        if self.diagonal:
            return [(c, c) for c in self.out_axis]
        return [(i, o) for i in self.in_axis for o in self.out_axis]

    def to_dict(self) -> dict[str, Any]:
        """The entry as JSON-ready data."""
        return {
            "name": self.name,
            "signature": self.signature,
            "in_features": self.in_features,
            "out_features": self.out_features,
            "in_groups": [list(x) for x in self.in_groups],
            "out_group": list(self.out_group) if self.out_group else None,
            "in_axis": list(self.in_axis),
            "out_axis": list(self.out_axis),
            "diagonal": self.diagonal,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LayerEntry:
        """The entry from :meth:`to_dict` data (KeyError/TypeError/ValueError when damaged)."""
        return cls(
            name=str(d["name"]),
            signature=str(d["signature"]),
            in_features=int(d["in_features"]),
            out_features=int(d["out_features"]),
            in_groups=tuple((str(g), int(c)) for g, c in d["in_groups"]),
            out_group=(str(d["out_group"][0]), int(d["out_group"][1])) if d["out_group"] else None,
            in_axis=tuple(int(v) for v in d["in_axis"]),
            out_axis=tuple(int(v) for v in d["out_axis"]),
            diagonal=bool(d["diagonal"]),
        )


def _signatures_to_json(signatures: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    sigs = {}
    for key, sig in signatures.items():
        pts = sorted(sig["points"].items())
        sigs[key] = {
            **{k: v for k, v in sig.items() if k != "points"},
            "points": [[i, o, round(ms, 6)] for (i, o), ms in pts],
        }
    return sigs


def _signatures_from_json(data: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        k: {
            **{a: b for a, b in v.items() if a != "points"},
            "points": {(int(i), int(o)): float(ms) for i, o, ms in v["points"]},
        }
        for k, v in data.items()
    }


@dataclass(frozen=True)
class LatencyTable:
    """A profiled table: identity (model, device, search space), per-layer timings and the fitted correction.

    ``signatures`` maps a layer shape key to its attributes and ``points``: ``{(cin, cout): median ms}``.
    ``calibration`` holds each prediction mode's fit (intercept, slopes) and the ``points`` (table sums,
    measured ms) it was fitted on.
    """

    model: Mapping[str, Any]
    device: Mapping[str, Any]
    search: Mapping[str, Any]
    groups: Mapping[str, int]
    layers: tuple[LayerEntry, ...]
    signatures: Mapping[str, Mapping[str, Any]]
    calibration: Mapping[str, Any]
    created: str
    build_seconds: float
    source: Mapping[str, Any] = field(default_factory=dict)

    # -- persistence

    def to_dict(self) -> dict[str, Any]:
        """The table as the JSON document :meth:`save` writes."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "created": self.created,
            "build_seconds": round(self.build_seconds, 2),
            "model": dict(self.model),
            "device": dict(self.device),
            "search": dict(self.search),
            "source": dict(self.source),
            "groups": dict(self.groups),
            "calibration": dict(self.calibration),
            "layers": [la.to_dict() for la in self.layers],
            "signatures": _signatures_to_json(self.signatures),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, source: str = "latency table") -> LatencyTable:
        """The table from a JSON document.

        Args:
            d: the document.
            source: what to call it in error messages.

        Returns:
            The table.

        Raises:
            UserError: another format or version, or a damaged document.
        """
        if d.get("format") != FORMAT:
            raise UserError(f"{source} is not a prunegym latency table (format {d.get('format')!r}); {REBUILD}")
        if d.get("version") != VERSION:
            raise UserError(f"{source} has table version {d.get('version')}, this prunegym reads {VERSION}; {REBUILD}")
        try:
            return cls(
                model=d["model"],
                device=d["device"],
                search=d["search"],
                groups={str(k): int(v) for k, v in d["groups"].items()},
                layers=tuple(LayerEntry.from_dict(x) for x in d["layers"]),
                signatures=_signatures_from_json(d["signatures"]),
                calibration=d["calibration"],
                created=str(d.get("created", "")),
                build_seconds=float(d.get("build_seconds", 0.0)),
                source=d.get("source") or {},
            )
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise UserError(f"{source} is a damaged latency table ({type(exc).__name__}: {exc}); {REBUILD}") from exc

    def save(self, path: Path | str) -> Path:
        """Write the table as JSON (atomically) and return the path."""
        return write_json(Path(path), self.to_dict())

    @classmethod
    def read(cls, path: Path | str) -> LatencyTable:
        """Read a table written by :meth:`save`.

        Raises:
            UserError: a missing file, invalid JSON, or anything :meth:`from_dict` rejects.
        """
        path = Path(path)
        if not path.is_file():
            raise UserError(f"latency table not found: {path}; make one with `prunegym latency build`")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"latency table {path} is not valid JSON ({exc}); {REBUILD}") from exc
        if not isinstance(data, dict):
            raise UserError(f"latency table {path} is not a JSON object; {REBUILD}")
        return cls.from_dict(data, source=f"latency table {path}")

    # -- validity

    def check_model(self, model: nn.Module, *, input_shape: Sequence[int], source: str = "latency table") -> None:
        """Raise a one-line UserError unless ``model``/``input_shape`` is the architecture the table was built for."""
        arch = architecture_hash(model, input_shape=input_shape)
        want = self.model
        if arch == want.get("arch_hash") and list(input_shape) == list(want.get("input_shape", [])):
            return
        raise UserError(
            f"{source} was built for model {want.get('name')} (arch {want.get('arch_hash')}, input "
            f"{_shape_text(want.get('input_shape', []))}), not this {model_name(model)} (arch {arch}, input "
            f"{_shape_text(input_shape)}); {REBUILD} --model ... for this model"
        )

    def check_device(self, device: Mapping[str, Any], *, source: str = "latency table") -> None:
        """Raise a one-line UserError naming every device field (provider, threads, CPU, ...) that differs.

        Args:
            device: this run's :func:`device_info`.
            source: what to call the table in the message.
        """
        mine = {**_OLD_DEFAULTS, "runtime_version": self.device.get("onnxruntime"), **self.device}
        diffs = [f"{k} {mine.get(k)!r} ≠ {device.get(k)!r}" for k in DEVICE_KEYS if mine.get(k) != device.get(k)]
        if diffs:
            raise UserError(
                f"{source} was profiled on another device or runtime setting ({', '.join(diffs)}: table ≠ this "
                f"run); {REBUILD} on this machine with --provider/--threads of this run"
            )

    def check_round_to(self, round_to: int, *, source: str = "latency table") -> None:
        """Raise UserError unless every count reachable at ``round_to`` (ratios up to the table's max) is profiled."""
        max_ratio = float(self.search["max_ratio"])
        if int(self.search["round_to"]) == round_to:
            return
        for g, n in self.groups.items():
            have = group_counts(n, round_to=int(self.search["round_to"]), max_ratio=max_ratio, name=g)
            need = group_counts(n, round_to=round_to, max_ratio=max_ratio, name=g)
            if need[0] < have[0]:
                raise UserError(
                    f"{source} was built for round_to {self.search['round_to']} and does not cover group '{g}' "
                    f"at round_to {round_to} ({need[0]} < {have[0]} channels); {REBUILD} --round-to {round_to}"
                )

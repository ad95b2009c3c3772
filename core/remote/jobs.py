"""A device job on the wire: ONNX bytes and a small JSON header, never a pickle; checked before anything loads it.

Layout: ``b"PGJOB1"``, a 4-byte big-endian header length, the UTF-8 JSON header (``format``, ``spec``, ``sizes``
of the models), then the models' bytes back to back. :func:`decode_job` checks the size limit, the header's
fields and types and every model with ``onnx.checker`` before a runtime sees it; anything wrong is a
:class:`BadJob`, which the worker turns into an error result.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["DEFAULT_MAX_JOB_BYTES", "JOB_FORMAT", "KINDS", "MAGIC", "BadJob", "JobSpec", "decode_job", "encode_job"]

MAGIC = b"PGJOB1"
JOB_FORMAT = "prunegym.job/1"
KINDS = ("latency", "accuracy")
DEFAULT_MAX_JOB_BYTES = 64 * 1024 * 1024
_MAX_MODELS = 512


class BadJob(ValueError):
    """A job the worker refuses (too large, malformed header, an invalid ONNX model): an error result."""


@dataclass(frozen=True)
class JobSpec:
    """What a job asks the device to measure.

    Args:
        kind: ``latency`` (interleaved rounds over the job's models, the first is the reference) or ``accuracy``
            (top-1 of each model on the labelled image folder the worker holds).
        input_shapes: C×H×W of each model's input (empty: the models' own static shapes).
        batch: batch of the latency runs.
        warmup: untimed runs of each model before the rounds.
        repeats: timed runs of each model over all rounds.
        rounds: interleaved rounds.
        round_warmup: untimed runs of each model at the start of its turn in a round.
        clock: ``auto``, ``cpu`` or ``wall`` (auto: the inference thread's CPU time at one thread).
        throughput_batch: batch of the throughput runs (0: no throughput).
        throughput_repeats: timed throughput runs of each model.
        mean: per-channel mean of the input normalization (accuracy jobs).
        std: per-channel std of the input normalization (accuracy jobs).
        labels: class names in the model's output order (accuracy jobs; matched to the folder's class names).
        limit: images to score at most (accuracy jobs; 0: all).
        raw_times: return every timed run (models × rounds × runs, both clocks), not only the summaries.
        tag: any text; it enters the cache key, so that a job meant to be re-measured is not answered from the cache.
    """

    kind: str = "latency"
    input_shapes: tuple[tuple[int, ...], ...] = ()
    batch: int = 1
    warmup: int = 10
    repeats: int = 50
    rounds: int = 5
    round_warmup: int = 2
    clock: str = "auto"
    throughput_batch: int = 0
    throughput_repeats: int = 5
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()
    labels: tuple[str, ...] = ()
    limit: int = 0
    raw_times: int = 0
    tag: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise BadJob(f"unknown job kind {self.kind!r}; use one of {', '.join(KINDS)}")
        for name in ("batch", "repeats", "rounds", "throughput_repeats"):
            if not 1 <= getattr(self, name) <= 100_000:
                raise BadJob(f"job {name} must be in 1..100000, got {getattr(self, name)}")
        for name in ("warmup", "round_warmup", "throughput_batch", "limit", "raw_times"):
            if not 0 <= getattr(self, name) <= 1_000_000:
                raise BadJob(f"job {name} must be in 0..1000000, got {getattr(self, name)}")
        if self.clock not in ("auto", "cpu", "wall"):
            raise BadJob(f"job clock must be auto, cpu or wall, got {self.clock!r}")
        if self.kind == "accuracy" and (not self.labels or not self.mean or len(self.mean) != len(self.std)):
            raise BadJob("an accuracy job needs labels and one mean and std per channel")

    @classmethod
    def from_dict(cls, data: Any) -> JobSpec:
        """The spec of a decoded header's ``spec`` object (only known fields, of the right JSON types)."""
        if not isinstance(data, dict):
            raise BadJob("job spec must be a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise BadJob(f"unknown job spec field(s) {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for k, v in data.items():
            default = getattr(cls, k, None)
            if k == "input_shapes":
                ok = isinstance(v, list) and all(
                    isinstance(s, list) and all(isinstance(d, int) and 0 < d <= 65536 for d in s) for s in v
                )
                if not ok:
                    raise BadJob("job input_shapes must be a list of lists of positive ints")
                values[k] = tuple(tuple(s) for s in v)
            elif k in ("mean", "std"):
                if not isinstance(v, list) or not all(isinstance(x, int | float) for x in v):
                    raise BadJob(f"job {k} must be a list of numbers")
                values[k] = tuple(float(x) for x in v)
            elif k == "labels":
                if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                    raise BadJob("job labels must be a list of strings")
                values[k] = tuple(v)
            elif isinstance(default, int):
                if not isinstance(v, int) or isinstance(v, bool):
                    raise BadJob(f"job {k} must be an integer, got {v!r}")
                values[k] = v
            else:
                if not isinstance(v, str):
                    raise BadJob(f"job {k} must be a string, got {v!r}")
                values[k] = v
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON-ready values (tuples as lists)."""
        out = asdict(self)
        out["input_shapes"] = [list(s) for s in self.input_shapes]
        for k in ("mean", "std", "labels"):
            out[k] = list(out[k])
        return out

    def digest(self, models: Sequence[bytes]) -> str:
        """SHA-256 (hex) of the models' own SHA-256s and this spec: what a cached result is keyed by."""
        h = hashlib.sha256()
        for m in models:
            h.update(hashlib.sha256(m).digest())
        h.update(json.dumps(self.to_dict(), sort_keys=True).encode("utf-8"))
        return h.hexdigest()


def encode_job(models: Sequence[bytes], *, spec: JobSpec) -> bytes:
    """The wire form of a job.

    Args:
        models: serialized ONNX models (for a latency job, the reference first).
        spec: what to measure.
    """
    header = json.dumps({"format": JOB_FORMAT, "spec": spec.to_dict(), "sizes": [len(m) for m in models]})
    raw = header.encode("utf-8")
    return MAGIC + struct.pack(">I", len(raw)) + raw + b"".join(models)


def decode_job(payload: bytes, *, max_bytes: int = DEFAULT_MAX_JOB_BYTES) -> tuple[JobSpec, list[bytes]]:
    """Check and split a job's payload.

    Args:
        payload: the wire form (:func:`encode_job`).
        max_bytes: the largest payload accepted.

    Returns:
        The spec and the models' bytes, each one checked by ``onnx.checker``.

    Raises:
        BadJob: too large, no magic, a malformed or mismatching header, or an invalid ONNX model.
    """
    if len(payload) > max_bytes:
        raise BadJob(f"job payload of {len(payload)} bytes is over this worker's limit of {max_bytes} bytes")
    if not payload.startswith(MAGIC) or len(payload) < len(MAGIC) + 4:
        raise BadJob("job payload does not start with the prunegym job header")
    (size,) = struct.unpack(">I", payload[len(MAGIC) : len(MAGIC) + 4])
    start = len(MAGIC) + 4
    if size > min(len(payload) - start, 1 << 20):
        raise BadJob(f"job header length {size} does not fit the payload")
    try:
        header = json.loads(payload[start : start + size].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadJob(f"job header is not JSON: {exc}") from exc
    if not isinstance(header, dict) or header.get("format") != JOB_FORMAT:
        raise BadJob(f"job header format must be {JOB_FORMAT!r}")
    spec = JobSpec.from_dict(header.get("spec"))
    sizes = header.get("sizes")
    if not isinstance(sizes, list) or not sizes or not all(isinstance(n, int) and n > 0 for n in sizes):
        raise BadJob("job sizes must be a non-empty list of positive ints")
    if len(sizes) > _MAX_MODELS:
        raise BadJob(f"a job holds at most {_MAX_MODELS} models, got {len(sizes)}")
    body = payload[start + size :]
    if sum(sizes) != len(body):
        raise BadJob(f"job models are {len(body)} bytes, the header says {sum(sizes)} (truncated?)")
    if spec.input_shapes and len(spec.input_shapes) != len(sizes):
        raise BadJob(f"job has {len(sizes)} models but {len(spec.input_shapes)} input shapes")
    models, offset = [], 0
    for i, n in enumerate(sizes):
        models.append(body[offset : offset + n])
        offset += n
        _check_onnx(models[-1], index=i)
    return spec, models


def _check_onnx(data: bytes, *, index: int) -> None:
    import onnx
    from google.protobuf.message import DecodeError

    try:
        onnx.checker.check_model(onnx.load_from_string(data))
    except (DecodeError, onnx.checker.ValidationError, ValueError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise BadJob(f"job model {index} is not a valid ONNX model: {first}") from exc

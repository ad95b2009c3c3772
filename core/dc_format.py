"""The ``.dc`` file: a model stored as Deep Compression does (Han et al. 2016) — sparse, weight-shared, Huffman-coded.

Layout: ``MAGIC``, the header length (8 bytes, little-endian), the JSON header (zlib-deflated: its tensor names
and code tables would otherwise weigh a third of a ResNet-20's file), the payload. The header names the
zoo model (``model``, ``num_classes``, ``in_channels``, ``policy``) so that the file rebuilds through
:func:`prunegym.core.checkpoint.rebuild_model` (no pickle: a data file never chooses code to run; a factory spec
still needs ``--allow-import``), and describes every tensor of the state_dict in order:

- ``shared`` (the Conv2d/Linear weights): the nonzero entries in CSR order (rows = output channels; Linear weights
  in CSC order, as in the paper), each as a *relative index* (zeros skipped since the previous entry, at most
  ``2^index_bits − 1``: a longer run is bridged by a filler entry holding zero) and a *cluster index* into the
  layer's codebook (float32, in the payload; symbol ``len(codebook)`` is the filler's zero). Both streams are canonical-Huffman coded
  (:mod:`prunegym.core.huffman`); only the code descriptions are stored.
- ``raw`` (BatchNorm, biases, counters): the tensor's bytes, little-endian.

The payload's SHA-256 is in the header: a corrupt or truncated file is refused with one line. Reading gives exactly
the tensors written (``torch.equal``).
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from prunegym.core.errors import CheckpointError
from prunegym.core.huffman import huffman_decode, huffman_encode
from prunegym.core.io import atomic_write_bytes

__all__ = [
    "DC_FORMAT",
    "DC_SUFFIX",
    "SharedLayer",
    "is_dc_file",
    "read_dc",
    "relative_indices",
    "stored_order",
    "write_dc",
]

DC_FORMAT = "prunegym.dc/1"
DC_SUFFIX = ".dc"
MAGIC = b"PGDC\x01\n"
MAX_HEADER_BYTES = 64 * 1024 * 1024  # a header inflating past this is not ours (a zlib bomb)
MAX_ELEMENTS = 1 << 30  # values a file may ask to allocate (a CNN of 4 GB of float32 weights)
_DTYPES = {
    torch.float32: "float32",
    torch.float16: "float16",
    torch.float64: "float64",
    torch.int64: "int64",
    torch.int32: "int32",
    torch.bool: "bool",
    torch.uint8: "uint8",
}


@dataclass(frozen=True)
class SharedLayer:
    """How one weight tensor is stored: its codebook (every nonzero weight equals one entry exactly).

    Args:
        codebook: the layer's centroids (float32).
        bits: the cluster-index width it was shared with (``len(codebook) ≤ 2**bits``), recorded for the report.
        index_bits: width of a relative index (longest run of zeros between entries: ``2**index_bits − 1``).
        order: ``csr`` (rows = output channels) or ``csc`` (columns first: Linear layers).
    """

    codebook: np.ndarray
    bits: int
    index_bits: int = 5
    order: str = "csr"


def is_dc_file(path: Path | str) -> bool:
    """Whether ``path`` names a ``.dc`` file (by its suffix)."""
    return str(path).endswith(DC_SUFFIX)


def stored_order(t: torch.Tensor, order: str) -> np.ndarray:
    m = t.detach().cpu().reshape(t.shape[0], -1).numpy()
    return np.ascontiguousarray(m.T if order == "csc" else m).ravel()


def relative_indices(flat: np.ndarray, max_gap: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the nonzeros → (relative indices, is-filler) with fillers wherever a gap exceeds ``max_gap``."""
    pos = np.flatnonzero(flat)
    gaps = np.diff(pos, prepend=-1) - 1
    fillers = gaps // (max_gap + 1)  # fillers needed before each entry
    n = len(pos) + int(fillers.sum())
    rel = np.empty(n, dtype=np.int64)
    is_fill = np.zeros(n, dtype=bool)
    at = 0
    for g, f in zip(gaps.tolist(), fillers.tolist(), strict=True):
        if f:
            rel[at : at + f] = max_gap
            is_fill[at : at + f] = True
            at += f
        rel[at] = g - f * (max_gap + 1)
        at += 1
    return rel, is_fill


def _encode_shared(t: torch.Tensor, layer: SharedLayer, name: str, chunks: list[bytes], offset: int) -> dict:
    if t.dtype != torch.float32:
        raise ValueError(f"{name}: only float32 weights can be shared, got {t.dtype}")
    book = np.asarray(layer.codebook, dtype=np.float32).ravel()
    if len(book) > 2**layer.bits:
        raise ValueError(f"{name}: {len(book)} centroids do not fit {layer.bits} bits")
    flat = stored_order(t, layer.order)
    rel, is_fill = relative_indices(flat, 2**layer.index_bits - 1)
    values = flat[flat != 0]
    order = np.argsort(book, kind="stable")
    where = np.searchsorted(book[order], values)
    where = np.clip(where, 0, len(book) - 1)
    idx = order[where]
    if not np.array_equal(book[idx], values):
        raise ValueError(f"{name}: a nonzero weight is not one of its codebook's values; share the weights first")
    sym = np.full(len(rel), len(book), dtype=np.int64)
    sym[~is_fill] = idx
    packed = book.astype("<f4").tobytes()
    entry: dict[str, Any] = {
        "kind": "shared",
        "order": layer.order,
        "bits": layer.bits,
        "index_bits": layer.index_bits,
        "codebook": {"offset": offset, "nbytes": len(packed)},
        "entries": len(rel),
        "nonzeros": len(values),
    }
    chunks.append(packed)
    offset += len(packed)
    for key, stream in (("gaps", rel), ("values", sym)):
        data, count, canon = huffman_encode(stream)
        entry[key] = {"offset": offset, "nbytes": len(data), "count": count, "symbols": canon}
        chunks.append(data)
        offset += len(data)
    return entry


def write_dc(
    path: Path | str,
    *,
    meta: Mapping[str, Any],
    state_dict: Mapping[str, torch.Tensor],
    shared: Mapping[str, SharedLayer],
) -> Path:
    """Write ``state_dict`` as a ``.dc`` file, the tensors in ``shared`` sparse + shared + Huffman coded.

    Args:
        path: the file (atomically written).
        meta: JSON-able description of the model (``model``, ``num_classes``, ``in_channels``, ``policy``,
            ``input_shape``) for :func:`prunegym.core.checkpoint.rebuild_model`.
        state_dict: every tensor of the model.
        shared: the weight tensors to store shared, by name.

    Returns:
        The path written.

    Raises:
        ValueError: a shared tensor whose nonzeros are not all codebook values, or an unsupported dtype.
    """
    unknown = set(shared) - set(state_dict)
    if unknown:
        raise ValueError(f"shared tensors not in the state_dict: {', '.join(sorted(unknown))}")
    chunks: list[bytes] = []
    offset = 0
    tensors = []
    for name, t in state_dict.items():
        if t.dtype not in _DTYPES:
            raise ValueError(f"{name}: dtype {t.dtype} cannot be stored")
        entry: dict[str, Any] = {"name": name, "shape": list(t.shape), "dtype": _DTYPES[t.dtype]}
        if name in shared:
            entry.update(_encode_shared(t, shared[name], name, chunks, offset))
        else:
            data = t.detach().cpu().contiguous().numpy().astype(np.dtype(_DTYPES[t.dtype]).newbyteorder("<")).tobytes()
            entry.update({"kind": "raw", "offset": offset, "nbytes": len(data)})
            chunks.append(data)
        offset = sum(len(c) for c in chunks)
        tensors.append(entry)
    payload = b"".join(chunks)
    header = {
        "format": DC_FORMAT,
        **dict(meta),
        "payload_bytes": len(payload),
        "payload_sha256": hashlib.sha256(payload).hexdigest(),
        "tensors": tensors,
    }
    head = zlib.compress(json.dumps(header, separators=(",", ":")).encode("utf-8"), 9)
    return atomic_write_bytes(Path(path), MAGIC + struct.pack("<Q", len(head)) + head + payload)


def _decode_shared(entry: dict, payload: bytes) -> torch.Tensor:
    cb = entry["codebook"]
    book = np.frombuffer(payload[cb["offset"] : cb["offset"] + cb["nbytes"]], dtype="<f4").astype(np.float32)
    shape = tuple(entry["shape"])
    streams = []
    for key in ("gaps", "values"):
        s = entry[key]
        data = payload[s["offset"] : s["offset"] + s["nbytes"]]
        streams.append(huffman_decode(data, s["count"], s["symbols"], n=int(entry["entries"])))
    rel, sym = streams
    pos = np.cumsum(rel + 1) - 1
    rows = shape[0]
    size = int(np.prod(shape)) if shape else 1
    if len(pos) and (pos[-1] >= size or sym.max() > len(book)):
        raise ValueError("entries outside the tensor")
    flat = np.zeros(size, dtype=np.float32)
    keep = sym < len(book)
    flat[pos[keep]] = book[sym[keep]]
    m = flat.reshape(-1, rows).T if entry["order"] == "csc" else flat.reshape(rows, -1)
    return torch.from_numpy(np.ascontiguousarray(m)).reshape(shape)


def read_dc(path: Path | str) -> dict[str, Any]:
    """Read a ``.dc`` file: its header fields (``model``, ``num_classes``, …, ``tensors``) and ``state_dict``.

    Raises:
        CheckpointError: not a ``.dc`` file, a truncated or corrupt one, or one this version cannot read.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model file not found: {path}; check --model")
    raw = path.read_bytes()
    fix = "it is corrupt or truncated; write it again with `prunegym compress`"
    if not raw.startswith(MAGIC):
        raise CheckpointError(f"{path} is not a prunegym .dc file (bad magic); {fix}")
    try:
        (n,) = struct.unpack_from("<Q", raw, len(MAGIC))
        start = len(MAGIC) + 8
        inflate = zlib.decompressobj()
        head = inflate.decompress(raw[start : start + n], MAX_HEADER_BYTES)
        if inflate.unconsumed_tail:
            raise CheckpointError(f"{path}: its header inflates past {MAX_HEADER_BYTES:,} bytes; {fix}")
        header = json.loads(head.decode("utf-8"))
        elements = sum(int(np.prod(e["shape"], dtype=np.int64)) for e in header["tensors"])
        if elements > MAX_ELEMENTS:
            raise CheckpointError(f"{path}: its tensors claim {elements:,} values (at most {MAX_ELEMENTS:,}); {fix}")
        payload = raw[start + n :]
        if header.get("format") != DC_FORMAT:
            raise CheckpointError(f"{path} is a {header.get('format')!r} file, not {DC_FORMAT}; upgrade prunegym")
        if len(payload) != header["payload_bytes"] or hashlib.sha256(payload).hexdigest() != header["payload_sha256"]:
            raise CheckpointError(f"{path}: the payload does not match its checksum; {fix}")
        state: dict[str, torch.Tensor] = {}
        for entry in header["tensors"]:
            if entry["kind"] == "shared":
                state[entry["name"]] = _decode_shared(entry, payload)
            else:
                data = payload[entry["offset"] : entry["offset"] + entry["nbytes"]]
                arr = np.frombuffer(data, dtype=np.dtype(entry["dtype"]).newbyteorder("<")).astype(entry["dtype"])
                state[entry["name"]] = torch.from_numpy(arr.copy()).reshape(entry["shape"])
    except CheckpointError:
        raise
    except (struct.error, zlib.error, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path}: {type(exc).__name__}: {str(exc)[:120]}; {fix}") from exc
    return {**header, "state_dict": state}

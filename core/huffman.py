"""Canonical Huffman coding of integer streams (Deep Compression's last stage), on ``bitarray``'s C coder.

Only the canonical description is stored: ``count[n]`` (how many codes have length ``n``) and the symbols in
code order; ``bitarray.util.canonical_huffman`` builds the code and ``canonical_decode`` reads it back.
"""

from __future__ import annotations

from itertools import islice

import numpy as np
from bitarray import bitarray
from bitarray.util import canonical_decode, canonical_huffman

__all__ = ["huffman_decode", "huffman_encode"]


def huffman_encode(symbols: np.ndarray) -> tuple[bytes, list[int], list[int]]:
    """Code a 1-D array of non-negative integers with a canonical Huffman code of its own frequencies.

    Args:
        symbols: the stream.

    Returns:
        ``(data, count, order)``: the packed bits (MSB first, zero-padded to a byte), the number of codes of each
        length (``count[n]``, from length 0) and the symbols in canonical order. Decode with :func:`huffman_decode`.
    """
    symbols = np.asarray(symbols, dtype=np.int64).ravel()
    if symbols.size == 0:
        return b"", [], []
    values, freqs = np.unique(symbols, return_counts=True)
    codes, count, order = canonical_huffman(dict(zip(values.tolist(), freqs.tolist(), strict=True)))
    bits = bitarray(endian="big")
    bits.encode(codes, symbols.tolist())
    return bits.tobytes(), [int(c) for c in count], [int(s) for s in order]


def huffman_decode(data: bytes, count: list[int], order: list[int], *, n: int) -> np.ndarray:
    """Read ``n`` symbols coded by :func:`huffman_encode`.

    Args:
        data: the packed bits.
        count: codes per length, as the encoder returned.
        order: the symbols in canonical order, as the encoder returned.
        n: how many symbols the stream holds.

    Returns:
        The symbols as an int64 array.

    Raises:
        ValueError: the bits end early or match no code (a corrupt stream), or the code description is invalid.
    """
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if not order or sum(count) != len(order):
        raise ValueError("the Huffman code description does not match its symbols")
    bits = bitarray(endian="big")
    bits.frombytes(data)
    try:
        out = np.fromiter(islice(canonical_decode(bits, count, order), n), dtype=np.int64, count=n)
    except ValueError as exc:  # bitarray: "reached end of bitarray", "ran into invalid codeword", bad count
        raise ValueError(f"corrupt Huffman stream: {exc}") from exc
    return out

"""Resumable steps that never serve stale results.

A multi-step command (``replay``) skips a step whose outputs exist only when they were made from the same
settings and inputs: each step records a *stamp* (a hash of its settings and of its input steps' stamps) in
``steps.json`` beside its outputs, with the settings themselves so that the message can say what changed.
A changed or missing stamp makes the step run again, and through the chained stamps every step after it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prunegym.core.io import atomic_write_text

__all__ = ["StepStamps", "file_digest", "stamp_of"]

log = logging.getLogger(__name__)

STAMPS_FILE = "steps.json"


def stamp_of(settings: Mapping[str, Any]) -> str:
    """A short, stable hash of JSON-able ``settings``."""
    text = json.dumps(dict(settings), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def file_digest(path: Path | str | None) -> str | None:
    """The SHA-256 (first 16 hex digits) of a file's content; ``None`` for no path; the path itself when it is
    not a file (a zoo name)."""
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        return str(path)
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def _plain(settings: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(dict(settings), default=str))  # tuples → lists, as the file holds them


def _changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    new = _plain(new)
    keys = sorted(set(old) | set(new))
    diff = [f"{k} {old.get(k)!r} → {new.get(k)!r}" for k in keys if old.get(k) != new.get(k)]
    return ", ".join(diff[:4]) + (" …" if len(diff) > 4 else "") if diff else "its inputs changed"


class StepStamps:
    """The stamps of one folder's steps (``folder/steps.json``), written atomically after each step.

    Args:
        folder: the folder the steps write into.
        label: what a step is called in the log (``replay step``, ``compress step``).
    """

    def __init__(self, folder: Path | str, *, label: str = "replay step") -> None:
        self.path = Path(folder) / STAMPS_FILE
        self.label = label
        try:
            data = json.loads(self.path.read_text(encoding="utf-8")) if self.path.exists() else {}
        except (OSError, json.JSONDecodeError):
            log.warning("%s is unreadable: every step will run again", self.path)
            data = {}
        self._data: dict[str, Any] = data if isinstance(data, dict) else {}

    def fresh(self, step: str, settings: Mapping[str, Any], outputs: Sequence[Path]) -> bool:
        """Whether ``step``'s ``outputs`` all exist and were made from ``settings``; logs why not when some of them
        exist (the caller then redoes the step)."""
        have = [p for p in outputs if Path(p).exists()]
        entry = self._data.get(step) or {}
        if len(have) == len(outputs) and entry.get("stamp") == stamp_of(settings):
            return True
        if have:
            why = (
                _changes(entry.get("settings") or {}, settings)
                if entry
                else "no record of the settings it was made from"
            )
            log.warning("redoing %s %s (its outputs are stale: %s)", self.label, step, why)
        return False

    def record(self, step: str, settings: Mapping[str, Any]) -> None:
        """Record that ``step``'s outputs were just made from ``settings``."""
        self._data[step] = {"stamp": stamp_of(settings), "settings": _plain(settings)}
        atomic_write_text(self.path, json.dumps(self._data, indent=2, sort_keys=True) + "\n")

"""Helpers shared by the Optuna storage tests (imported as a plain module: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import subprocess
import sys


def open_storage_together(url: str, *, workers: int) -> list[str]:
    """Open ``url`` as prunegym's storage from ``workers`` processes started at once; the last stderr line of each
    that failed (empty: all succeeded)."""
    code = (
        "from pathlib import Path\n"
        "from prunegym.search.optuna_storage import open_storage, resolve_storage\n"
        f"open_storage(resolve_storage({url!r}, run_dir=Path('.')))\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True) for _ in range(workers)]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    return [e.strip().splitlines()[-1] for p, e in zip(procs, errors, strict=True) if p.returncode != 0]

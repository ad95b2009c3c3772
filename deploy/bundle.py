"""The deployment bundle: a folder that runs with ONNX Runtime alone, plus an honest report.

::

    bundle/
      model.onnx          FP32
      model.int8.onnx     INT8 (static QDQ)
      preprocessing.json  input size, layout, channels, mean/std, resize (see prunegym.deploy.runtime)
      labels.txt          one class name per line
      report.json         the ``report`` dict as given
      report.md           a DeePhi-style summary rendered from report.json

The folder is written atomically: everything goes into a temporary folder beside ``out_dir`` which is then
renamed into place (an existing bundle is replaced only with ``overwrite=True``, and only once the new one is
complete).

``report`` is free-form JSON; :func:`render_report` reads these keys when present::

    {"title": str, "model": str, "dataset": str,
     "variants": {"baseline": {...}, "pruned": {...}, "int8": {...}},   # in display order; any names
     "latency": {"provider": str, "threads": int, "batch": int},       # how latency/FPS were measured
     "notes": [str, ...]}

with each variant ``{"top1": %, "top5": %, "params": int, "macs": int, "size_mb": float, "latency_ms": float,
"fps": float}`` (missing values render as "—"). Deltas are against the first variant.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prunegym.core.errors import UserError
from prunegym.core.onnxrt.runtime import RUNTIME_LABELS
from prunegym.deploy.runtime import FP32_FILE, INT8_FILE, LABELS_FILE, PREPROCESSING_FILE, Preprocessing

__all__ = ["REPORT_JSON", "REPORT_MD", "render_report", "write_bundle"]

log = logging.getLogger(__name__)

REPORT_JSON = "report.json"
REPORT_MD = "report.md"

# (key, row label, kind): kind decides number format and how the delta reads
_ROWS = (
    ("top1", "Accuracy top-1 (%)", "accuracy"),
    ("top5", "Accuracy top-5 (%)", "accuracy"),
    ("params", "Weights (params)", "count"),
    ("macs", "Operations (MACs)", "count"),
    ("size_mb", "Size (MB)", "size"),
    ("latency_ms", "Latency (ms)", "latency"),
    ("fps", "Throughput (FPS)", "fps"),
    ("mac_reduction", "MAC reduction (×)", "ratio"),
    ("speedup", "Speed-up vs baseline FP32 (×)", "ratio"),
    ("realization", "Realization (speed-up ÷ MAC reduction)", "ratio"),
)


def speed_words(speedup: float) -> str:
    """``"2.17× faster"`` or, below 1, ``"1.20× slower"`` (never "0.83× faster")."""
    return f"{speedup:.2f}× faster" if speedup >= 1.0 else f"{1.0 / speedup:.2f}× slower"


def _fmt_value(value: Any, kind: str) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "—"
    if kind == "accuracy":
        return f"{value:.2f}"
    if kind == "count":
        return _human(value)
    if kind == "ratio":
        return f"{value:.2f}"
    if kind in ("size", "latency"):
        return f"{value:.3f}" if value < 10 else f"{value:.2f}"
    return f"{value:.0f}"


def _human(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{unit}"
    return f"{value:.0f}"


def _fmt_delta(value: Any, base: Any, kind: str) -> str:
    numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (value, base))
    if not numbers:
        return ""
    if kind == "accuracy":
        return f" ({value - base:+.2f} pt)"
    if not base or not value:
        return ""
    if kind == "latency":
        return f" ({speed_words(base / value)})"
    if kind == "fps":
        return f" ({value / base:.2f}×)"
    if kind == "ratio":
        return ""
    return f" ({100.0 * (value - base) / base:+.1f}%)"


def render_report(report: Mapping[str, Any]) -> str:
    """report.md: a title, the variants × metrics table with deltas against the first variant, then notes."""
    title = report.get("title") or f"prunegym deploy report: {report.get('model', 'model')}"
    lines = [f"# {title}", ""]
    facts = [f"{key}: {report[key]}" for key in ("model", "dataset") if key in report]
    if facts:
        lines += ["; ".join(facts), ""]
    variants = report.get("variants") or {}
    if isinstance(variants, Mapping) and variants:
        names = list(variants)
        base = variants[names[0]]
        lines.append("| metric | " + " | ".join(names) + " |")
        lines.append("|---|" + "---:|" * len(names))
        for key, label, kind in _ROWS:
            if not any(isinstance(v, Mapping) and key in v for v in variants.values()):
                continue
            cells = []
            for i, name in enumerate(names):
                value = variants[name].get(key) if isinstance(variants[name], Mapping) else None
                delta = _fmt_delta(value, base.get(key), kind) if i and isinstance(base, Mapping) else ""
                cells.append(_fmt_value(value, kind) + delta)
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines.append("")
    latency = report.get("latency")
    if isinstance(latency, Mapping) and latency:

        def text(v: Any) -> str:
            return ", ".join(f"{k}: {x}" for k, x in v.items()) if isinstance(v, Mapping) else str(v)

        how = "; ".join(f"{k} {text(v)}" for k, v in latency.items())
        name = RUNTIME_LABELS.get(str(latency.get("runtime", "ort")), str(latency.get("runtime")))
        lines += [f"Latency and FPS measured with {name}: {how}.", ""]
    notes = report.get("notes") or []
    if isinstance(notes, Sequence) and not isinstance(notes, str) and notes:
        lines += ["## Notes", "", *[f"- {note}" for note in notes], ""]
    return "\n".join(lines).rstrip() + "\n"


def _write_text(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def _swap_in(new: Path, target: Path) -> None:
    """Rename ``new`` to ``target``. An existing ``target`` is exchanged with ``new`` atomically where the system
    can (so a reader always finds a complete bundle), else set aside first and restored if the rename fails."""
    if not target.exists():
        os.replace(new, target)
        return
    if _exchange(new, target):
        shutil.rmtree(new)  # now the old bundle
        return
    holder = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
    os.replace(target, holder / target.name)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(holder / target.name, target)
        raise
    shutil.rmtree(holder)


def write_bundle(
    out_dir: Path | str,
    *,
    fp32_onnx: Path | str,
    int8_onnx: Path | str,
    preprocessing: Mapping[str, Any],
    labels: Sequence[str],
    report: Mapping[str, Any],
    extras: Mapping[str, Path | str] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write the bundle folder ``out_dir`` atomically and return its path. See the module docstring.

    ``extras`` (name inside the bundle → file, e.g. ``plots/x.png``) are copied in before the swap.
    """
    out_dir = Path(out_dir)
    for path in (Path(fp32_onnx), Path(int8_onnx)):
        if not path.is_file():
            raise UserError(f"ONNX model not found: {path}; export and quantize before writing the bundle")
    if out_dir.exists() and not overwrite:
        raise UserError(f"bundle folder {out_dir} already exists; choose another folder or overwrite it (--force)")
    pre = Preprocessing.from_dict(dict(preprocessing))
    names = [str(label).strip() for label in labels]
    if not names or any(not n or "\n" in n for n in names):
        raise UserError("labels must be non-empty single-line class names, one per class")
    try:
        report_json = json.dumps(report, indent=2, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise UserError(f"report is not plain JSON ({exc}); pass numbers, strings, lists and dicts only") from exc
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        shutil.copyfile(fp32_onnx, tmp / FP32_FILE)
        shutil.copyfile(int8_onnx, tmp / INT8_FILE)
        _write_text(tmp / PREPROCESSING_FILE, json.dumps(pre.to_dict(), indent=2) + "\n")
        _write_text(tmp / LABELS_FILE, "\n".join(names) + "\n")
        _write_text(tmp / REPORT_JSON, report_json + "\n")
        _write_text(tmp / REPORT_MD, render_report(report))
        for name, src in (extras or {}).items():
            dest = tmp / name
            if dest.resolve().parent != tmp.resolve() / Path(name).parent:
                raise UserError(f"bundle extra {name!r} would land outside the bundle")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a bundle is meant to be shared
        _swap_in(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote bundle %s", out_dir)
    return out_dir

"""The one way prunegym draws a PNG: a matplotlib :class:`~matplotlib.figure.Figure` on the Agg canvas, written
atomically. No global backend switch (``matplotlib.use``) and no display are needed, so plotting works in
workers, in tests and on a headless device.
"""

from __future__ import annotations

import io
from pathlib import Path

from matplotlib.figure import Figure

from prunegym.core.io import atomic_write_bytes

__all__ = ["Figure", "png_bytes", "save_png"]


def png_bytes(fig: Figure, *, dpi: float | None = None) -> bytes:
    """The figure rendered as PNG bytes.

    Args:
        fig: the figure to render.
        dpi: resolution; ``None`` keeps the figure's own.
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi or "figure")  # a bare Figure renders PNGs on the Agg canvas
    return buf.getvalue()


def save_png(fig: Figure, out: Path | str, *, dpi: float | None = None) -> Path:
    """Write ``fig`` as a PNG to ``out`` atomically (parent folders created) and return the path.

    Args:
        fig: the figure to write.
        out: the PNG file.
        dpi: resolution; ``None`` keeps the figure's own.
    """
    return atomic_write_bytes(Path(out), png_bytes(fig, dpi=dpi))

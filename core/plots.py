"""Matplotlib figures drawn off-screen (no display on a server) and saved atomically as PNG."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from core import fs


def subplots(columns: int = 1, *, size: tuple[float, float] = (6, 3)) -> tuple[Any, Any]:
    """A new figure and its axes on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(1, columns, figsize=size, dpi=100)


def save_png(fig: Any, target: Path) -> Path:
    """Lay out, render and write ``fig`` to ``target`` atomically, then free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return fs.write_bytes(target, buffer.getvalue())

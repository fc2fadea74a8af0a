"""Figures without pyplot: shown once in a notebook, saved atomically.

The figures nstlib draws are *not* registered with pyplot: a notebook shows one when it is the
value of a cell (or through ``display(fig)``), exactly once. (A pyplot figure returned as a
cell's value is shown twice, once by the inline backend and once as the value, and pyplot keeps
every figure made in a loop alive.) So ``plt.savefig()`` does not see them: use `save_figure`.
"""

from __future__ import annotations

import os
from io import BytesIO
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from nstlib._io import atomic_write

_SAVE_FORMATS = {".png": "png", ".pdf": "pdf", ".svg": "svg"}


class NotebookFigure(Figure):
    """A Figure that IPython can show without pyplot (see above)."""

    def _repr_png_(self) -> bytes:
        buf = BytesIO()
        self.savefig(buf, format="png", bbox_inches="tight")
        return buf.getvalue()


def new_figure(figsize: tuple[float, float]) -> Figure:
    """A pyplot-free figure of `figsize` inches (width, height), constrained layout."""
    return NotebookFigure(figsize=figsize, layout="constrained")


def root_figure(ax: Axes) -> Figure:
    """The top Figure `ax` belongs to (through any SubFigures)."""
    fig: Any = ax.figure
    while not isinstance(fig, Figure):  # an Axes in a SubFigure
        fig = fig.figure
    return fig


def save_figure(fig: Figure, path: str | os.PathLike, dpi: float = 150) -> Path:
    """Write `fig` to `path` (.png, or .pdf / .svg) atomically; returns the path.

    The PNG is figure size (inches) x dpi pixels. Written to a temporary name beside the target
    and renamed, so an interrupted save never leaves half a file where a good one was.
    """
    if not isinstance(fig, Figure):
        raise TypeError(f"save_figure expects a matplotlib Figure (what the nstlib.viz functions return), got {type(fig).__name__}.")
    path = Path(path)
    fmt = _SAVE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"cannot save {path}: unknown suffix {path.suffix!r}; use one of {', '.join(_SAVE_FORMATS)}.")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot save {path}: the folder {path.parent} does not exist.")
    if path.is_dir():
        raise ValueError(f"cannot save to {path}: it is a folder.")
    if isinstance(dpi, bool) or not isinstance(dpi, (int, float)) or not dpi > 0:
        raise ValueError(f"dpi must be a number > 0, got {dpi!r}.")
    with atomic_write(path) as f:
        fig.savefig(f, format=fmt, dpi=dpi)
    return path

"""Figures for the report, drawn with matplotlib's Agg canvas.

``pyplot`` is never imported: a :class:`~matplotlib.figure.Figure` attached to its own
``FigureCanvasAgg`` needs no global backend switch, so a user's interactive pyplot
session (or another plugin's) is left untouched, and nothing leaks between calls.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from evals.stats.metrics import ProgramMetrics

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FIGSIZE = (9.0, 8.0)
DPI = 110


def confusion_png(m: ProgramMetrics, path: Path) -> Path:
    """Draw the 22 x 23 confusion matrix of one program into a PNG file.

    Cells are shaded by the share of their row (so rare and common diagnoses are equally
    readable) and annotated with the raw count when it is not zero. The last column
    counts answers that were no valid label.

    Args:
        m: Metrics of one program.
        path: Where to write the PNG; parent directories are created. The file is
            written to a temporary name and moved into place, so readers never see half
            an image.

    Returns:
        ``path``.
    """
    figure = confusion_figure(m)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A plain open() (unlike mkstemp) keeps the umask's permissions for a shareable file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with tmp.open("wb") as stream:
            figure.savefig(stream, format="png", dpi=DPI)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def confusion_figure(m: ProgramMetrics) -> Figure:
    """The confusion-matrix figure of :func:`confusion_png`, attached to its own Agg canvas.

    Fixed margins fit the longest diagnosis names and the colour bar's label; they replace
    ``tight_layout``, which drew the whole figure once more only to measure it (about a
    third of the figure's CPU time).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = np.asarray(m.confusion, dtype=float)
    support = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, support, out=np.zeros_like(counts), where=support > 0)

    figure = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    # Empty cells are masked so they stay white, apart from cells with a few counts.
    shown = np.ma.masked_where(counts == 0, shares)
    image = axes.imshow(shown, cmap="Blues", vmin=0.0, vmax=1.0, aspect="auto")
    _annotate(axes, counts, shares)
    _label_axes(axes, m)
    colorbar = figure.colorbar(image, ax=axes, fraction=0.035, pad=0.02)
    colorbar.set_label("share of the gold row", fontsize=8)
    colorbar.ax.tick_params(labelsize=7)
    figure.subplots_adjust(left=0.24, bottom=0.25, right=0.92, top=0.95)
    return figure


def _annotate(axes: Axes, counts: np.ndarray, shares: np.ndarray) -> None:
    """Write each non-zero count in its cell, white on dark cells."""
    for (row, column), count in np.ndenumerate(counts):
        if count:
            axes.text(
                column,
                row,
                str(int(count)),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if shares[row, column] > 0.55 else "black",
            )


def _label_axes(axes: Axes, m: ProgramMetrics) -> None:
    """Tick labels for both axes, a title, and a line marking the invalid column."""
    columns = m.confusion_columns
    rows = columns[:-1]
    axes.set_xticks(range(len(columns)))
    axes.set_xticklabels(columns, rotation=55, ha="right", rotation_mode="anchor", fontsize=7)
    axes.set_yticks(range(len(rows)))
    axes.set_yticklabels(rows, fontsize=7)
    axes.set_xlabel("predicted", fontsize=9)
    axes.set_ylabel("gold", fontsize=9)
    axes.axvline(len(rows) - 0.5, color="0.4", linewidth=0.8)
    # Faint gridlines between cells make rows easy to follow across 23 columns (two line collections:
    # minor ticks would build ~50 tick objects for them, a fifth of the figure's time).
    edges_x, edges_y = np.arange(len(columns) + 1) - 0.5, np.arange(len(rows) + 1) - 0.5
    axes.vlines(edges_x, edges_y[0], edges_y[-1], color="0.9", linewidth=0.5, zorder=1.5)
    axes.hlines(edges_y, edges_x[0], edges_x[-1], color="0.9", linewidth=0.5, zorder=1.5)
    axes.set_xlim(edges_x[0], edges_x[-1])
    axes.set_ylim(edges_y[-1], edges_y[0])
    axes.set_title(f"{m.program}: n={m.n}, accuracy={m.accuracy:.1%}", fontsize=11)

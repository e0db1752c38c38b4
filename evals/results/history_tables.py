"""``evals report`` tables that fit an 80-column terminal: programs as rows, never as columns.

The old layout put one column per program in the sessions table, so with five programs rich
squeezed every column and cut program names to ``…``. Here the sessions table has a fixed
width (no program in it), the accuracy of each program is one row with its recent values as
a sparkline, and the comparison of the last two sessions is one row per program with the
recall changes as wrapping text beneath.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.table import Table

    from evals.store.history import Delta, Session

SPARK = "▁▂▃▄▅▆▇█"
"""Block elements: in every terminal font (the HTML report uses SVG instead)."""
_VERDICT_STYLE = {"pass": "green", "passed": "green", "fail": "red", "failed": "red"}
_EPSILON = 1e-9


def sparkline(values: Sequence[float | None]) -> str:
    """One block per value on a 0-1 scale (``·`` where a session did not run the program)."""
    cells = []
    for value in values:
        if value is None:
            cells.append("·")
        else:
            cells.append(SPARK[min(len(SPARK) - 1, max(0, int(value * len(SPARK) - _EPSILON)))])
    return "".join(cells)


def sessions_table(sessions: Sequence[Session]) -> Table:
    """One row per session (newest first): when, run id (whole: `evals promote` takes it), verdict, trigger, branch."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    table = Table(
        title="Recent sessions",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    for column in ("#", "started", "run", "verdict", "trigger", "branch"):
        table.add_column(column, no_wrap=column != "branch", justify="right" if column == "#" else "left")
    for number, session in enumerate(sessions, 1):
        verdict = session.verdict
        style = _VERDICT_STYLE.get(verdict.lower())
        table.add_row(
            str(number),
            time.strftime("%Y-%m-%d %H:%M", time.localtime(session.started_at)),
            session.run_id,
            f"[{style}]{escape(verdict)}[/]" if style else escape(verdict),
            escape(session.trigger),
            escape(session.branch),
        )
    return table


def accuracy_table(sessions: Sequence[Session]) -> Table:
    """One row per program: its accuracy in the newest session, the change since the one before,
    and a sparkline over all ``sessions`` (oldest left)."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    oldest_first = list(reversed(sessions))
    programs = sorted({name for session in sessions for name in session.programs})
    table = Table(
        title=f"Accuracy per program, last {len(sessions)} sessions",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("program", overflow="fold", ratio=1)
    for column in ("latest", "change"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("trend (oldest left)", no_wrap=True)
    for program in programs:
        values = [_accuracy(s, program) for s in oldest_first]
        present = [v for v in values if v is not None]
        latest = values[-1]
        before = present[-2] if latest is not None and len(present) > 1 else None
        change = None if latest is None or before is None else latest - before
        better = None if change is None or abs(change) < _EPSILON else change > 0
        table.add_row(escape(program), _number(latest), _change(change, better), sparkline(values))
    return table


def compare_table(a: Session, b: Session, deltas: Sequence[Delta]) -> RenderableType:
    """The deltas from ``a`` (before) to ``b`` (after): a row per program with its headline
    metrics, then the recall changes of each program as text that wraps."""
    from rich import box
    from rich.console import Group
    from rich.markup import escape
    from rich.table import Table
    from rich.text import Text

    table = Table(
        title=f"{a.run_id[:8]} (before) -> {b.run_id[:8]} (after)",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    table.add_column("program", overflow="fold", ratio=1)
    table.add_column("accuracy", justify="right", no_wrap=True)
    for column in ("Δ acc", "Δ F1", "Δ inv."):
        table.add_column(column, justify="right", no_wrap=True)
    by_program: dict[str, dict[str, Delta]] = {}
    for delta in deltas:
        by_program.setdefault(delta.program, {})[delta.metric] = delta
    recall_lines = []
    for program, metrics in by_program.items():
        accuracy = metrics.get("accuracy")
        span = "-" if accuracy is None else f"{_number(accuracy.before)}->{_number(accuracy.after)}"
        table.add_row(
            escape(program), span, *(_delta_cell(metrics.get(m)) for m in ("accuracy", "macro_f1", "invalid_rate"))
        )
        recalls = [d for name, d in metrics.items() if name.startswith("recall.")]
        if recalls:
            parts = ", ".join(
                f"{d.metric} {_number(d.before)}->{_number(d.after)} ({_change(d.change, None)})" for d in recalls
            )
            recall_lines.append(Text.assemble((f"{program}: ", "bold"), parts))
    if not recall_lines:
        return table
    return Group(table, Text("Recall changes", style="bold"), *recall_lines)


def _accuracy(session: Session, program: str) -> float | None:
    result = session.programs.get(program)
    return None if result is None else result.metrics.get("accuracy")


def _delta_cell(delta: Delta | None) -> str:
    if delta is None:
        return "-"
    return _change(delta.change, delta.better)


def _change(change: float | None, better: bool | None) -> str:
    if change is None:
        return "n/a"
    text = f"{change:+.3f}"
    style = {True: "green", False: "red", None: ""}[better]
    return f"[{style}]{text}[/]" if style else text


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"

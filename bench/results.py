"""The benchmark's results: goals, rows, the report, and their rendering."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench.common import OPS

# ----- results: goals, rows, rendering -----


@dataclass(frozen=True)
class Goal:
    """What a row's ratio should be, e.g. ``Goal("<=", 1.05)``."""

    op: str
    target: float

    def met(self, ratio: float | None) -> bool | None:
        """True or False, or None when there is no ratio to judge."""
        return None if ratio is None else bool(OPS[self.op][0](ratio, self.target))

    def __str__(self) -> str:
        return f"{OPS[self.op][1]} {self.target:g}"


@dataclass(frozen=True)
class Row:
    """One measurement: its values (unit in the key's suffix), ratio, goal and verdict."""

    name: str
    values: dict[str, float]
    ratio: float | None
    goal: Goal
    note: str = ""

    @property
    def met(self) -> bool | None:
        return self.goal.met(self.ratio)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "values": self.values,
            "ratio": self.ratio,
            "goal": str(self.goal),
            "met": self.met,
            "note": self.note,
        }


@dataclass(frozen=True)
class BenchReport:
    """The machine, the options, the rows and how long it all took."""

    machine: dict[str, Any]
    options: dict[str, Any]
    rows: list[Row]
    runtime_s: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "machine": self.machine,
            "options": self.options,
            "runtime_s": round(self.runtime_s, 1),
            "rows": [row.to_dict() for row in self.rows],
        }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or None when either is missing or the denominator is 0."""
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def format_value(key: str, value: float) -> str:
    """Render ``key value`` by the unit the key ends in (``_s``, ``_mib``, ``_share``, ``_per_s``)."""
    label = key.replace("_", " ")
    if key.endswith("_per_s"):
        return f"{label[:-6]} {value:,.0f}/s" if value >= 100 else f"{label[:-6]} {value:.2f}/s"
    if key.endswith("_s"):
        return f"{label[:-2]} {value:,.1f} s"
    if key.endswith("_mib"):
        return f"{label[:-4]} {value:,.0f} MiB"
    if key.endswith("_share"):
        return f"{label} {value:.0%}"
    if key.endswith("_accuracy"):
        return f"{label} {value:.3f}"
    return f"{label} {value:g}"


def measured_text(row: Row, separator: str = "; ") -> str:
    parts = [format_value(key, value) for key, value in row.values.items()]
    return separator.join([*parts, row.note] if row.note else parts)


def _cells(row: Row) -> tuple[str, str, str]:
    met = {True: "yes", False: "no", None: "n/a"}[row.met]
    return ("n/a" if row.ratio is None else f"{row.ratio:.3f}", str(row.goal), met)


def machine_line(machine: dict[str, Any]) -> str:
    return (
        f"{machine['nproc']} cores ({machine['cpu']}), {machine['ram_gib']:.1f} GiB RAM, "
        f"load {machine['load_start']:.2f} at start, {machine['load_end']:.2f} at end"
    )


def render_table(report: BenchReport) -> Any:
    """The rows as a rich Table titled with the machine."""
    from rich.table import Table

    table = Table(
        "measurement", "measured", "ratio", "goal", "met", title=machine_line(report.machine), title_justify="left"
    )
    for row in report.rows:
        ratio_text, goal, met = _cells(row)
        style = {"yes": "green", "no": "red"}.get(met, "yellow")
        table.add_row(row.name, measured_text(row, "\n"), ratio_text, goal, f"[{style}]{met}[/{style}]")
    return table


def render_markdown(report: BenchReport) -> str:
    """The rows as a Markdown table for the README, with the machine and options above it."""
    options = ", ".join(f"{key}={value}" for key, value in report.options.items())
    lines = [
        f"Machine: {machine_line(report.machine)}. Options: {options}. Runtime {report.runtime_s:.0f} s.",
        "",
        "| measurement | measured | ratio | goal | met |",
        "|---|---|---|---|---|",
    ]
    for row in report.rows:
        cells = (row.name, measured_text(row), *_cells(row))
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"

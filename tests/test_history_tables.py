"""``evals report`` in an 80-column terminal: programs as rows, no name cut to an ellipsis."""

from __future__ import annotations

import pytest

from evals.results.history_tables import accuracy_table, compare_table, sessions_table, sparkline
from evals.store.history import ProgramResult, Session, compare

PROGRAMS = (
    "zero_shot",
    "chain_of_thought",
    "knn_few_shot",
    "tfidf_logreg",
    "zero_shot+bootstrap_few_shot",
    "zero_shot+knn_few_shot",
    "chain_of_thought+bootstrap_random_search",
)


def _sessions(count: int = 4) -> list:
    sessions = []
    for s in range(count):
        programs = {
            p: ProgramResult(
                p,
                f"child{s}{i}",
                {
                    "accuracy": (i + s) % 10 / 10,
                    "macro_f1": 0.5,
                    "invalid_rate": 0.1 * s,
                    "recall.bronchial_asthma": s / 4,
                    "recall.gastroesophageal_reflux_disease": 0.5,
                },
            )
            for i, p in enumerate(PROGRAMS)
        }
        tags = {"evals.verdict": "pass" if s % 2 else "fail", "evals.trigger": "local", "git.branch": "main"}
        sessions.append(Session(f"{s:x}" * 32, f"sess{s}", 1_796_000_000.0 - 3600 * s, "FINISHED", tags, programs))
    return sessions  # newest first, as recent_sessions returns them


def _render(renderable: object, width: int = 80) -> str:
    from rich.console import Console

    console = Console(width=width, record=True, force_terminal=False, color_system=None)
    console.print(renderable)
    return console.export_text()


@pytest.mark.parametrize("table", ["sessions", "accuracy", "compare"])
def test_fits_80_columns_with_every_name_whole(table: str) -> None:
    sessions = _sessions()
    renderable = {
        "sessions": lambda: sessions_table(sessions),
        "accuracy": lambda: accuracy_table(sessions),
        "compare": lambda: compare_table(sessions[1], sessions[0], compare(sessions[1], sessions[0])),
    }[table]()
    text = _render(renderable)
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text
    if table != "sessions":
        rows = text.split("Recall changes")[0]
        for program in PROGRAMS:
            assert program in rows


def test_accuracy_rows_show_latest_change_and_trend() -> None:
    text = _render(accuracy_table(_sessions(3)))
    row = next(line for line in text.splitlines() if line.split()[:1] == ["zero_shot"])
    # zero_shot accuracy by session (newest first): 0.0, 0.1, 0.2 -> latest 0.000, change -0.100
    assert "0.000" in row and "-0.100" in row and sparkline([0.2, 0.1, 0.0]) in row


def test_compare_lists_recall_changes_as_text() -> None:
    sessions = _sessions()
    text = _render(compare_table(sessions[1], sessions[0], compare(sessions[1], sessions[0])))
    assert "Recall changes" in text
    assert "recall.bronchial_asthma 0.250->0.000 (-0.250)" in text
    assert "gastroesophageal" not in text  # unchanged recalls are left out


def test_sparkline() -> None:
    assert sparkline([0.0, 0.5, 1.0, None]) == "▁▄█·"

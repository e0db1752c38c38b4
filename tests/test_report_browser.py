"""Load the report in headless Chromium: the script must run without error and every section be there.

Skipped (with the reason) when no Chromium is installed: ``apt-get install -y chromium``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from evals.results.html import SECTION_IDS, render_html
from evals.results.html_data import ReportData
from tests.report_samples import sample_data

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--enable-logging=stderr",
    "--v=0",
)


def find_browser() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


@dataclass(frozen=True)
class Loaded:
    dom: str
    console_errors: list[str]


def load(page: Path, browser: str) -> Loaded:
    """The DOM after the page's script ran (``--dump-dom``) and the console errors Chromium logged."""
    with tempfile.TemporaryDirectory() as profile:
        done = subprocess.run(
            [browser, *FLAGS, f"--user-data-dir={profile}", "--dump-dom", page.resolve().as_uri()],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "HOME": profile},
        )
    errors = [line for line in done.stderr.splitlines() if "Uncaught" in line or ":CONSOLE" in line and "rror" in line]
    return Loaded(done.stdout, errors)


def problems(loaded: Loaded) -> list[str]:
    """What a reader would miss: a script error, a section, the explorer's rows."""
    found = [f"console: {line}" for line in loaded.console_errors]
    if 'data-js="ready"' not in loaded.dom:
        found.append("the script did not finish (no data-js=ready on <body>)")
    found += [f"missing section {ident}" for ident in SECTION_IDS if f'id="{ident}"' not in loaded.dom]
    if not re.search(r'id="explorer-count"[^>]*>Showing \d+ of \d+', loaded.dom):
        found.append("the explorer did not count its rows")
    return found


@pytest.fixture(scope="module")
def data() -> ReportData:
    return sample_data()


@pytest.fixture(scope="module")
def browser() -> str:
    path = find_browser()
    if path is None:
        pytest.skip("no Chromium to load the report in (apt-get install -y chromium)")
    return path


def test_report_loads_without_script_errors(browser: str, data: ReportData, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(render_html(data))
    loaded = load(page, browser)
    assert problems(loaded) == []
    body = re.search(r'<tbody id="explorer-body">(.*?)</tbody>', loaded.dom, re.S)
    assert body is not None
    wrong = sum(1 for e in data.examples if not e.correct)
    assert body.group(1).count("<tr") == wrong  # the explorer opens on the wrong answers
    assert "<script>alert" not in body.group(1)  # the hostile text stays text


def test_a_script_error_is_caught(browser: str, data: ReportData, tmp_path: Path) -> None:
    """The check above can fail: a page whose script throws is reported."""
    page = tmp_path / "broken.html"
    page.write_text(render_html(data).replace('"use strict";', '"use strict"; undefinedFunction();', 1))
    found = problems(load(page, browser))
    assert any("Uncaught" in line for line in found) and any("did not finish" in line for line in found)


def test_a_missing_section_is_caught(browser: str, data: ReportData, tmp_path: Path) -> None:
    page = tmp_path / "partial.html"
    page.write_text(render_html(data).replace('<section id="trend"', '<section id="gone"'))
    assert problems(load(page, browser)) == ["missing section trend"]


def test_the_summary_shows_each_program_cost(browser: str, tmp_path: Path) -> None:
    from tests.test_html_report import costed_data

    page = tmp_path / "costed.html"
    page.write_text(render_html(costed_data()))
    loaded = load(page, browser)
    assert problems(loaded) == []
    summary = re.search(r'<section id="summary"[^>]*>(.*?)</section>', loaded.dom, re.S)
    assert summary is not None
    header, *rows = re.findall(r"<tr[^>]*>(.*?)</tr>", summary.group(1), re.S)
    assert re.findall(r"<th[^>]*>([^<]*)</th>", header)[-1] == "cost / per example"
    costs = {
        re.sub(r"<[^>]+>", "", cells[0]): cells[-1] for cells in (re.findall(r"<td[^>]*>(.*?)</td>", r) for r in rows)
    }
    assert costs == {"zero_shot": "$0.5500 / $0.0125", "tfidf_logreg": "—"}

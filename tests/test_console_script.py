"""The ``evals`` console script runs the same commands as ``python -m evals``."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_declares_the_script() -> None:
    import importlib

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, function = scripts["evals"].split(":")
    assert getattr(importlib.import_module(module), function) is importlib.import_module("evals.__main__").main


def test_the_installed_script_runs_the_commands() -> None:
    script = Path(sys.executable).with_name("evals")
    if not script.is_file():
        script = Path(shutil.which("evals") or "")
    if not script.is_file():
        pytest.skip("the evals console script is not installed (pip install -e .)")
    done = subprocess.run([str(script), "--help"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: evals ")
    for command in ("sync", "report", "promote", "rollback"):
        assert command in done.stdout

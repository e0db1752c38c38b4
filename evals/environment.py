"""Facts about where a session ran: git state and package versions (for logging)."""

from __future__ import annotations

import platform
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

PACKAGES = ("dspy", "mlflow", "pytest", "pytest-xdist", "llama-cpp-python", "litellm", "datasets")


def git_facts(root: Path) -> dict[str, str]:
    """Commit, branch and dirty flag of the checkout at ``root`` (empty strings outside git)."""

    def git(*args: str) -> str:
        try:
            result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return ""
        return result.stdout.strip() if result.returncode == 0 else ""

    commit = git("rev-parse", "HEAD")
    return {
        "git.commit": commit,
        "git.branch": git("rev-parse", "--abbrev-ref", "HEAD"),
        "git.dirty": str(bool(git("status", "--porcelain", "--untracked-files=no"))).lower() if commit else "",
    }


def package_versions() -> dict[str, str]:
    versions = {"version.python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[f"version.{name}"] = version(name)
        except PackageNotFoundError:
            continue
    return versions


def environment_params(root: Path) -> dict[str, str]:
    return {**git_facts(root), **package_versions()}

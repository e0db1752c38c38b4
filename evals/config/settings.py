"""Layered configuration: defaults < pyproject.toml ini keys < environment < CLI flags.

Each setting has one name; the CLI flag is ``--evals-<name>``, the ini key
``evals_<name>`` and the environment variable ``EVALS_<NAME>`` (dashes become
underscores). :func:`resolve` reads them once into a frozen :class:`Settings`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evals.config.shard import parse_shard
from evals.data import parse_per_diagnosis
from evals.errors import ConfigError


@dataclass(frozen=True)
class Option:
    """One setting: its name, default, help text and parser from text."""

    name: str
    default: str | None
    help: str
    parse: Callable[[str], Any] = str
    flag: bool = False
    fallback_env: str | None = None

    @property
    def cli(self) -> str:
        return f"--evals-{self.name}"

    @property
    def ini(self) -> str:
        return f"evals_{self.name.replace('-', '_')}"

    @property
    def env(self) -> str:
        return f"EVALS_{self.name.replace('-', '_').upper()}"

    @property
    def dest(self) -> str:
        return self.ini


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, found {text!r}")


def _positive_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"expected a positive number, found {text!r}")
    return value


def _temperature(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 2:
        raise ValueError(f"expected a temperature between 0 and 2, found {text!r}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"expected a positive integer, found {text!r}")
    return value


def _concurrency(text: str) -> int | None:
    if text.strip().lower() == "auto":
        return None
    value = int(text)
    if value < 0:
        raise ValueError(f"expected auto or a number of calls (0 or more), found {text!r}")
    return value


def _split(text: str) -> str:
    if text not in ("train", "val", "test"):
        raise ValueError(f"expected train, val or test, found {text!r}")
    return text


def _trigger(text: str) -> str:
    if text not in ("local", "ci", "nightly"):
        raise ValueError(f"expected local, ci or nightly, found {text!r}")
    return text


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


OPTIONS: tuple[Option, ...] = (
    Option("lm", "smollm2", "LM spec: smollm2, llamacpp:PATH.gguf, mlx:smollm2|DIR|HF-ID or provider/model"),
    Option("lm-api-base", None, "Base URL of an OpenAI-compatible server for a provider/model LM"),
    Option(
        "lm-server",
        "false",
        (
            "Serve the in-process model (smollm2, llamacpp:, mlx:) to every worker from one server process "
            "for the session, answers constrained as in process"
        ),
        _bool,
        flag=True,
    ),
    Option("temperature", "0", "Sampling temperature of the LM", _temperature),
    Option("max-tokens", "384", "Completion token budget per LM call", _positive_int),
    Option("timeout", "120", "Seconds before one LM call times out", _positive_float),
    Option(
        "example-budget",
        "300",
        "Wall-clock seconds for one example, every retry and wait included; "
        "no retry starts that could not end within it",
        _positive_float,
    ),
    Option(
        "concurrency",
        "auto",
        "LM calls in flight for the whole session, xdist workers included (auto: 8 for HTTP LMs, none for "
        "in-process engines, which run one call at a time per process; 0: one at a time per process)",
        _concurrency,
    ),
    Option("data-dir", None, "Local directory with train.jsonl and test.jsonl (default: the Hugging Face Hub)"),
    Option("split", "test", "Split to evaluate: train, val or test", _split),
    Option("per-diagnosis", "2", "Examples per diagnosis to evaluate, or 'all'", parse_per_diagnosis),
    Option("seed", "0", "Seed of the train/val split and of the sampler", int),
    Option(
        "programs",
        None,
        "Comma-separated programs (or program+optimizer pairs) to evaluate (default: all "
        "registered programs and the pairs listed in the optimizers file)",
        _names,
    ),
    Option("registry", "programs", "Python module whose PROGRAMS dict names the programs"),
    Option(
        "optimizers", "programs/optimizers.yaml", "Optimizer configurations and evaluated (program, optimizer) pairs"
    ),
    Option(
        "recompile", "false", "Compile every optimized program afresh, ignoring the compile cache", _bool, flag=True
    ),
    Option("thresholds", "thresholds.yaml", "Path of the thresholds file, relative to the rootdir"),
    Option(
        "tracking-uri",
        "sqlite:///mlflow.db",
        "MLflow tracking URI (also read from MLFLOW_TRACKING_URI)",
        fallback_env="MLFLOW_TRACKING_URI",
    ),
    Option("experiment", "symptom-diagnosis-evals", "MLflow experiment name"),
    Option("no-mlflow", "false", "Do not log the session to MLflow (reports are still written)", _bool, flag=True),
    Option("trigger", None, "Why this session runs: local, ci or nightly (default: ci when CI is set)", _trigger),
    Option("report-dir", ".evals/reports", "Directory for session reports (one subdirectory per session)"),
    Option("spool-dir", ".evals/spool", "Directory where sessions wait when MLflow is unreachable"),
    Option("cache-dir", ".evals/cache", "Directory of the LM response cache and compiled programs"),
    Option("no-cache", "false", "Bypass the LM response cache (fresh answers)", _bool, flag=True),
    Option("baseline-run", None, "Compare with this MLflow run (a session or program run id) instead of the champion"),
    Option("no-regression", "false", "Skip the paired regression gate against the champion", _bool, flag=True),
    Option("promote", "false", "Promote this session's programs to champion if every gate passed", _bool, flag=True),
    Option("drift", "false", "Nightly drift mode: compare with the recent history of the champion", _bool, flag=True),
    Option(
        "shard",
        None,
        "Run shard K of N of the selected eval tests (1-based, e.g. 2/4): the bundle is written, nothing is "
        "logged; python -m evals merge makes one session of the N bundles",
        parse_shard,
    ),
)
OPTIONS_BY_NAME = {option.name: option for option in OPTIONS}


@dataclass(frozen=True)
class Settings:
    """Every harness setting after layering, parsed."""

    values: Mapping[str, Any]
    rootdir: Path
    sources: Mapping[str, str] = field(default_factory=dict)
    invocation_dir: Path | None = None

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def path(self, name: str) -> Path:
        """A path setting: from the CLI or environment relative to the invocation directory,
        from the ini file or the defaults relative to the rootdir (absolute paths as they are)."""
        source = self.sources.get(name, "default")
        given_here = source.startswith("--") or source.startswith("environment")
        base = self.invocation_dir if given_here and self.invocation_dir else self.rootdir
        return (base / Path(self.values[name]).expanduser()).resolve()

    @property
    def trigger(self) -> str:
        return str(self.values["trigger"])


def resolve(
    cli: Mapping[str, Any],
    ini: Mapping[str, Any],
    environ: Mapping[str, str],
    rootdir: Path,
    invocation_dir: Path | None = None,
) -> Settings:
    """Layer the sources of every option and parse them; a bad value raises ConfigError naming its source."""
    values, sources = {}, {}
    for option in OPTIONS:
        text, source = _raw(option, cli, ini, environ)
        values[option.name] = _parse(option, text, source)
        sources[option.name] = source
    values["trigger"] = values["trigger"] or ("ci" if environ.get("CI", "").lower() in ("1", "true") else "local")
    _check_budget(values, sources)
    return Settings(values=values, rootdir=rootdir, sources=sources, invocation_dir=invocation_dir)


def _check_budget(values: Mapping[str, Any], sources: Mapping[str, str]) -> None:
    """One LM call must fit in the example budget, or the budget would not bound anything."""
    if values["timeout"] > values["example-budget"]:
        raise ConfigError(
            f"{_where('timeout', sources)} {values['timeout']:g} s is longer than "
            f"{_where('example-budget', sources)} {values['example-budget']:g} s: one LM call must fit in the "
            "budget of one example; raise --evals-example-budget or lower --evals-timeout"
        )


def _where(name: str, sources: Mapping[str, str]) -> str:
    source = sources[name]
    return f"{OPTIONS_BY_NAME[name].cli} (default)" if source == "default" else source


def _raw(
    option: Option, cli: Mapping[str, Any], ini: Mapping[str, Any], environ: Mapping[str, str]
) -> tuple[str | None, str]:
    if cli.get(option.dest) not in (None, False):
        value = cli[option.dest]
        return ("true" if value is True else str(value)), option.cli
    if environ.get(option.env):
        return environ[option.env], f"environment variable {option.env}"
    if option.fallback_env and environ.get(option.fallback_env):
        return environ[option.fallback_env], f"environment variable {option.fallback_env}"
    if ini.get(option.ini):
        return str(ini[option.ini]), f"ini key {option.ini}"
    return option.default, "default"


def _parse(option: Option, text: str | None, source: str) -> Any:
    if text is None:
        return None
    try:
        return option.parse(text)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None

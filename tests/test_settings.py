"""Unit tests of evals.config.settings: layering, parsing, error messages naming their source."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from evals.config.settings import OPTIONS, OPTIONS_BY_NAME, Settings, resolve
from evals.errors import ConfigError

ROOT = Path("/srv/project")


def dest(name: str) -> str:
    return OPTIONS_BY_NAME[name].dest


def ini(name: str) -> str:
    return OPTIONS_BY_NAME[name].ini


def env(name: str) -> str:
    return OPTIONS_BY_NAME[name].env


def settle(
    cli: dict[str, Any] | None = None,
    ini_: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
    rootdir: Path = ROOT,
) -> Settings:
    return resolve(cli or {}, ini_ or {}, environ or {}, rootdir)


def test_option_names_follow_one_scheme() -> None:
    option = OPTIONS_BY_NAME["per-diagnosis"]
    assert (option.cli, option.ini, option.env, option.dest) == (
        "--evals-per-diagnosis",
        "evals_per_diagnosis",
        "EVALS_PER_DIAGNOSIS",
        "evals_per_diagnosis",
    )
    assert len({o.name for o in OPTIONS}) == len(OPTIONS)


def test_defaults() -> None:
    settings = settle()
    assert settings["lm"] == "smollm2"
    assert settings["temperature"] == 0.0
    assert settings["max-tokens"] == 384
    assert settings["per-diagnosis"] == 2
    assert settings["split"] == "test"
    assert settings["seed"] == 0
    assert settings["programs"] is None
    assert settings["data-dir"] is None
    assert settings["no-mlflow"] is False and settings["no-cache"] is False
    assert settings["tracking-uri"] == "sqlite:///mlflow.db"
    assert settings["trigger"] == "local"  # resolved from the (empty) environment: no CI variable
    assert set(settings.values) == set(OPTIONS_BY_NAME)


@pytest.mark.parametrize(
    ("name", "values", "parsed"),
    [
        ("temperature", ("0.1", "0.2", "0.3"), (0.1, 0.2, 0.3)),
        ("per-diagnosis", ("3", "all", "5"), (3, None, 5)),
        ("lm", ("openai/a", "openai/b", "openai/c"), ("openai/a", "openai/b", "openai/c")),
        ("programs", ("a", "b, c", "d,,e"), (("a",), ("b", "c"), ("d", "e"))),
    ],
)
def test_layering(name: str, values: tuple[str, str, str], parsed: tuple[Any, Any, Any]) -> None:
    ini_value, env_value, cli_value = values
    assert settle(ini_={ini(name): ini_value})[name] == parsed[0]
    assert settle(ini_={ini(name): ini_value}, environ={env(name): env_value})[name] == parsed[1]
    assert (
        settle(cli={dest(name): cli_value}, ini_={ini(name): ini_value}, environ={env(name): env_value})[name]
        == parsed[2]
    )
    assert settle(cli={dest(name): cli_value})[name] == parsed[2]


def test_unset_cli_and_empty_values_fall_through() -> None:
    settings = settle(
        cli={dest("temperature"): None, dest("no-mlflow"): False},
        ini_={ini("temperature"): "0.4", ini("no-mlflow"): "true"},
        environ={env("temperature"): ""},
    )
    assert settings["temperature"] == 0.4
    assert settings["no-mlflow"] is True


@pytest.mark.parametrize(("source", "value"), [("cli", True), ("env", "1"), ("env", "yes"), ("ini", "true")])
def test_boolean_flags(source: str, value: Any) -> None:
    layers: dict[str, dict[str, Any]] = {"cli": {}, "ini": {}, "env": {}}
    layers[source][{"cli": dest, "ini": ini, "env": env}[source]("no-cache")] = value
    assert settle(cli=layers["cli"], ini_=layers["ini"], environ=layers["env"])["no-cache"] is True


def test_boolean_env_can_say_false_over_ini() -> None:
    assert settle(ini_={ini("no-mlflow"): "true"}, environ={env("no-mlflow"): "off"})["no-mlflow"] is False


def test_mlflow_tracking_uri_fallback() -> None:
    mlflow = {"MLFLOW_TRACKING_URI": "http://mlflow.example:5000"}
    assert settle(environ=mlflow)["tracking-uri"] == "http://mlflow.example:5000"
    assert (
        settle(ini_={ini("tracking-uri"): "sqlite:///ini.db"}, environ=mlflow)["tracking-uri"]
        == "http://mlflow.example:5000"
    )
    assert settle(environ={**mlflow, env("tracking-uri"): "sqlite:///evals.db"})["tracking-uri"] == "sqlite:///evals.db"
    assert settle(cli={dest("tracking-uri"): "file:///cli"}, environ=mlflow)["tracking-uri"] == "file:///cli"


BAD_VALUES = [
    ("per-diagnosis", "0"),
    ("per-diagnosis", "x"),
    ("temperature", "3"),
    ("temperature", "hot"),
    ("temperature", "-0.5"),
    ("split", "dev"),
    ("trigger", "manual"),
    ("no-mlflow", "maybe"),
    ("no-cache", "2"),
    ("max-tokens", "0"),
    ("timeout", "-1"),
    ("example-budget", "0"),
    ("example-budget", "soon"),
    ("seed", "abc"),
]


@pytest.mark.parametrize(("name", "value"), BAD_VALUES)
@pytest.mark.parametrize("source", ["cli", "env", "ini"])
def test_bad_values_name_their_source(name: str, value: str, source: str) -> None:
    option = OPTIONS_BY_NAME[name]
    if source == "cli":
        kwargs: dict[str, Any] = {"cli": {option.dest: value}}
        label = option.cli
    elif source == "env":
        kwargs = {"environ": {option.env: value}}
        label = f"environment variable {option.env}"
    else:
        kwargs = {"ini_": {option.ini: value}}
        label = f"ini key {option.ini}"
    with pytest.raises(ConfigError) as info:
        settle(**kwargs)
    message = str(info.value)
    assert message.startswith(f"{label}: ")
    assert repr(value) in message or value in message
    assert "\n" not in message


def test_error_names_the_winning_source_only() -> None:
    with pytest.raises(ConfigError, match=r"^environment variable EVALS_SPLIT: .*'dev'"):
        settle(ini_={ini("split"): "train"}, environ={env("split"): "dev"})
    assert settle(cli={dest("split"): "val"}, environ={env("split"): "dev"})["split"] == "val"


def test_timeout_nan_is_refused() -> None:
    with pytest.raises(ConfigError, match="--evals-timeout"):
        settle(cli={dest("timeout"): "nan"})


def test_example_budget_default_and_layers() -> None:
    assert settle()["example-budget"] == 300.0
    assert settle(environ={env("example-budget"): "45.5"}, cli={dest("timeout"): "30"})["example-budget"] == 45.5
    assert settle(ini_={ini("example-budget"): "600"}, cli={dest("timeout"): "500"})["timeout"] == 500.0


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        (
            {"cli": {"evals_timeout": "600"}},
            "--evals-timeout 600 s is longer than --evals-example-budget (default) 300 s",
        ),
        (
            {"environ": {"EVALS_EXAMPLE_BUDGET": "10"}},
            "--evals-timeout (default) 120 s is longer than environment variable EVALS_EXAMPLE_BUDGET 10 s",
        ),
    ],
)
def test_a_call_longer_than_the_example_budget_is_refused(kwargs: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        settle(**kwargs)
    message = str(info.value)
    assert message.startswith(expected)
    assert "--evals-example-budget" in message and "\n" not in message


def test_path_is_relative_to_rootdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settle(
        cli={dest("report-dir"): "out/reports"},
        ini_={ini("thresholds"): str(tmp_path / "t.yaml")},
        rootdir=tmp_path / "root",
    )
    assert settings.path("report-dir") == (tmp_path / "root" / "out" / "reports").resolve()
    assert settings.path("thresholds") == (tmp_path / "t.yaml").resolve()
    assert settings.path("cache-dir") == (tmp_path / "root" / ".evals" / "cache").resolve()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert settle(environ={env("spool-dir"): "~/spool"}).path("spool-dir") == (tmp_path / "home" / "spool").resolve()


@pytest.mark.parametrize(
    ("ci", "expected"), [("true", "ci"), ("1", "ci"), ("TRUE", "ci"), ("false", "local"), (None, "local")]
)
def test_trigger_defaults_from_ci(monkeypatch: pytest.MonkeyPatch, ci: str | None, expected: str) -> None:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    environ = {} if ci is None else {"CI": ci}
    assert settle(environ=environ).trigger == expected


def test_explicit_trigger_wins_over_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    assert settle(cli={dest("trigger"): "nightly"}, environ={"CI": "true"}).trigger == "nightly"
    assert settle(environ={"CI": "true", env("trigger"): "local"}).trigger == "local"


def test_trigger_reads_the_environ_given_to_resolve(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    assert settle(environ={"CI": "true"}).trigger == "ci"

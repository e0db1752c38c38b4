"""Library noise: a pytest session that opens a new sqlite MLflow store after its test loop (where the
controller gates and uploads) prints mlflow's INFO lines and SQLAlchemy's deprecation warning, unless
the plugin's configure ran quiet_libraries; downloads print progress bars unless it ran."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = """
import pytest

@pytest.hookimpl(wrapper=True)
def pytest_runtestloop(session):
    result = yield
    from mlflow.tracking import MlflowClient
    MlflowClient("sqlite:///" + str(session.config.rootpath / "mlflow.db")).search_experiments()
    return result
"""


def _session(tmp_path: Path, plugin: bool) -> str:
    (tmp_path / "conftest.py").write_text(CONFTEST)
    (tmp_path / "test_one.py").write_text("def test_one():\n    pass\n")
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "EVALS_"))}
    disable = [] if plugin else ["-p", "no:evals"]
    command = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "-p", "no:randomly", *disable]
    done = subprocess.run(
        [*command, str(tmp_path)], cwd=tmp_path, capture_output=True, text=True, env=environ, timeout=300
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


@pytest.mark.parametrize("plugin", [False, True], ids=["without-the-plugin", "with-the-plugin"])
def test_no_library_noise_in_a_session(tmp_path: Path, plugin: bool) -> None:
    output = _session(tmp_path, plugin)
    noise = [line for line in output.splitlines() if "INFO mlflow" in line or "DeprecationWarning" in line]
    if plugin:
        assert noise == []
    else:  # the control: without the plugin's configure the noise is there, so the assertion above can fail
        assert any("INFO mlflow.store.db.utils" in line for line in noise)
        assert any("SADeprecationWarning" in line for line in noise)


def test_the_user_keeps_the_last_word() -> None:
    from evals.quiet import quiet_libraries

    environ = {"MLFLOW_LOGGING_LEVEL": "INFO"}
    quiet_libraries(environ)
    assert environ == {"MLFLOW_LOGGING_LEVEL": "INFO", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


DOWNLOAD = """
import os, tempfile
if {quiet!r}:
    from evals.quiet import quiet_libraries
    quiet_libraries()
import mlflow
from mlflow.tracking import MlflowClient
mlflow.set_tracking_uri("sqlite:///" + {db!r})
with mlflow.start_run() as run:
    path = os.path.join(tempfile.mkdtemp(), "a.txt")
    open(path, "w").write("x")
    mlflow.log_artifact(path)
    mlflow.log_artifact(path, "sub")
MlflowClient().download_artifacts(run.info.run_id, "", tempfile.mkdtemp())
"""


@pytest.mark.parametrize("quiet", [False, True], ids=["as-before", "quiet"])
def test_no_download_progress_bars(tmp_path: Path, quiet: bool) -> None:
    script = DOWNLOAD.format(quiet=quiet, db=str(tmp_path / "mlflow.db"))
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, env=environ, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert ("Downloading artifacts" in done.stderr) is not quiet
    assert ("INFO mlflow" in done.stderr) is not quiet


def test_the_program_model_file_defines_without_mlflow_advice() -> None:
    """MLflow runs the model-from-code file on every log and load; its "add type hints" advice is noise here."""
    model_file = Path(__file__).resolve().parents[1] / "evals" / "store" / "program_model.py"
    code = f"import mlflow.pyfunc, runpy; runpy.run_path({str(model_file)!r})"
    result = subprocess.run(
        [sys.executable, "-W", "always::UserWarning", "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "type hints" not in result.stderr

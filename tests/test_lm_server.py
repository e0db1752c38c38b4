"""--evals-lm-server: the controller starts one mlx_lm server and the xdist workers share it (slow: real mlx)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import SUITE, THRESHOLDS, write_tiny_dataset
from tests.test_plugin import bundles, run

pytest.importorskip("mlx_lm")


@pytest.mark.slow
def test_workers_share_one_mlx_server(pytester: pytest.Pytester) -> None:
    tiny_data_dir = write_tiny_dataset(pytester.path / "data")
    pytester.makepyfile(test_suite=SUITE)
    (pytester.path / "thresholds.yaml").write_text(THRESHOLDS)
    cache = pytester.path / "cache"

    result = run(
        pytester,
        f"-n 2 --evals-lm mlx:smollm2 --evals-lm-server --evals-data-dir {tiny_data_dir} "
        f"--evals-programs zero_shot --evals-per-diagnosis 1 -k allergy --evals-no-mlflow "
        f"--evals-cache-dir {cache} --evals-max-tokens 16",
    )

    result.assert_outcomes(passed=1)
    session = json.loads(bundles(pytester)[-1].read_text())
    assert session["params"]["lm.backend"] == "litellm"
    assert session["params"]["lm.api_base"].startswith("http://127.0.0.1:")
    logs = list((cache / "logs").glob("mlx_server_*.log"))
    assert len(logs) == 1, "exactly one server for the session"
    assert "POST /v1/chat/completions" in logs[0].read_text() or session["programs"]["zero_shot"]["metrics"]["n"] == 1

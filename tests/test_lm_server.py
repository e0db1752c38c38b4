"""--evals-lm-server with an mlx: spec: one server process runs the constrained MLXEngine (slow: real mlx)."""

from __future__ import annotations

import csv
import json

import pytest

from tests.conftest import SUITE, THRESHOLDS, write_tiny_dataset
from tests.test_plugin import bundles, run

pytest.importorskip("mlx_lm")


@pytest.mark.slow
def test_workers_share_one_constrained_mlx_server(pytester: pytest.Pytester) -> None:
    tiny_data_dir = write_tiny_dataset(pytester.path / "data")
    pytester.makepyfile(test_suite=SUITE)
    (pytester.path / "thresholds.yaml").write_text(THRESHOLDS)
    cache = pytester.path / "cache"

    result = run(
        pytester,
        f"-n 2 --evals-lm mlx:smollm2 --evals-lm-server --evals-data-dir={tiny_data_dir} "
        f"--evals-programs zero_shot --evals-per-diagnosis 1 -k allergy --evals-no-mlflow "
        f"--evals-cache-dir={cache}",
    )

    assert result.ret in (0, 1), result.stdout.str()[-2000:]
    session = json.loads(bundles(pytester)[-1].read_text())
    assert session["params"]["lm.backend"] == "mlx"  # the records name the model, not the server
    (log,) = (cache / "logs").glob("lm_server_*.log")
    text = log.read_text()
    assert text.count("model loaded: mlx/smollm2") == 1
    assert "POST /v1/chat/completions" in text
    (predictions,) = (pytester.path / ".evals" / "reports").glob("*/artifacts/predictions.csv")
    with predictions.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows and all(row["error"] == "" and row["predicted"] for row in rows)  # constrained: always a label

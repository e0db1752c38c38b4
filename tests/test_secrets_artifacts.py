"""Nothing secret reaches a bundle, the spool or MLflow, whatever the file type.

Key-looking strings, an e-mail address, a phone number and the value of a secret environment
variable are planted in patient texts (test split, and train split where compiled demos come
from); credentials are planted in the LM's API base and in the tracking URI. One session spools
(its tracking server is dead), one uploads to a sqlite store, then the spool is synced there.
Every file of the bundles, the spool and the artifact store (parquet decoded) and the raw bytes
of the database are scanned, and so is everything printed. Only ``.evals/cache`` (the LM
response and compile caches, documented as local) keeps the raw texts.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from evals.labels import DIAGNOSES
from evals.secrets import mask_url_credentials, scrub, scrub_text
from tests.conftest import KEYWORD_CONFTEST
from tests.test_plugin import run

KEY = "sk-proj-PLANTEDkey0123456789abcdef"
GITHUB = "ghp_PLANTED0123456789abcdefghijKL"
EMAIL = "jane.planted@example.org"
PHONE = "+44 20 7946 0958"
ENV_SECRET = "zq9-planted-env-secret"
LM_USER, LM_PASSWORD = "plantedlmuser", "plantedlmpass"
TRACKING_USER, TRACKING_PASSWORD = "plantedtrackuser", "plantedtrackpass"
PLANTED = (KEY, GITHUB, EMAIL, PHONE, ENV_SECRET, LM_USER, LM_PASSWORD, TRACKING_USER, TRACKING_PASSWORD)

OPTIMIZERS = """
optimizers:
  labeled: {class: LabeledFewShot, params: {k: 22}, trainset_per_diagnosis: 1}
evaluate: []
"""


def plant(data_dir: Path) -> None:
    """Add the planted strings to the first example of every diagnosis, in both splits.

    Each planted text names another diagnosis first, so the keyword LM answers it wrongly and the
    text shows up among the misclassified examples of the reports too.
    """
    for split in ("train", "test"):
        path = data_dir / f"{split}.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        seen: set[str] = set()
        for row in rows:
            if row["output_text"] not in seen:
                seen.add(row["output_text"])
                other = DIAGNOSES[(DIAGNOSES.index(row["output_text"]) + 1) % len(DIAGNOSES)]
                row["input_text"] = (
                    f"Not {other}. My key {KEY} and token {GITHUB}; mail {EMAIL} or call {PHONE}."
                    f" Reference {ENV_SECRET}. " + row["input_text"]
                )
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def leaks(text: str) -> list[str]:
    return [planted for planted in PLANTED if planted in text]


def scan(root: Path) -> dict[str, list[str]]:
    """Planted strings found in each file under ``root`` (parquet files decoded)."""
    import pandas as pd

    found = {}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.suffix == ".parquet":
            text = pd.read_parquet(path).to_csv()
        else:
            text = path.read_bytes().decode("latin-1")
        if leaks(text):
            found[str(path.relative_to(root))] = leaks(text)
    return found


@pytest.fixture
def planted_project(eval_project: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    plant(tmp_path / "data")
    monkeypatch.setenv("CLINIC_API_KEY", ENV_SECRET)
    eval_project.makeconftest(KEYWORD_CONFTEST)
    (eval_project.path / "optimizers.yaml").write_text(textwrap.dedent(OPTIMIZERS))
    ini = eval_project.path / "tox.ini"
    ini.write_text(
        ini.read_text().replace("evals_programs = zero_shot", "evals_programs = zero_shot,zero_shot+labeled")
        + "\nevals_optimizers = optimizers.yaml\n"
        + "evals_lm = openai/planted-model\n"
        + f"evals_lm_api_base = http://{LM_USER}:{LM_PASSWORD}@127.0.0.1:9/v1\n"
    )
    return eval_project


def test_no_planted_secret_in_any_artifact_spool_store_or_output(planted_project: pytest.Pytester) -> None:
    project = planted_project
    dead = f"http://{TRACKING_USER}:{TRACKING_PASSWORD}@127.0.0.1:1"
    spooled = run(project, f"--evals-tracking-uri {dead}")
    live = run(project)
    synced = subprocess.run(
        [
            sys.executable,
            "-m",
            "evals",
            "sync",
            "--spool",
            ".evals/spool",
            "--tracking-uri",
            f"sqlite:///{project.path / 'mlflow.db'}",
        ],
        cwd=project.path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert "MLflow at http://127.0.0.1:1 unreachable" in spooled.stdout.str()  # said, without the credentials
    printed = spooled.stdout.str() + spooled.stderr.str() + live.stdout.str() + live.stderr.str()
    assert leaks(printed + synced.stdout + synced.stderr) == []
    everything = {
        **scan(project.path / ".evals" / "reports"),
        **scan(project.path / ".evals" / "spool"),
        **scan(project.path / "mlartifacts"),
    }
    assert everything == {}
    assert leaks((project.path / "mlflow.db").read_bytes().decode("latin-1")) == []
    spool_meta = json.loads(next((project.path / ".evals" / "spool").rglob("spool.json")).read_text())
    assert spool_meta["tracking_uri"] == "http://127.0.0.1:1"

    # Not vacuous: the texts are there, redacted, in every format, and the hosts stay readable.
    bundle = next((project.path / ".evals" / "reports").iterdir()) / "artifacts"
    import pandas as pd

    symptoms = " ".join(pd.read_parquet(bundle / "predictions.parquet")["symptoms"])
    assert "[REDACTED:email]" in symptoms and "[REDACTED:phone]" in symptoms and "My key ***" in symptoms
    assert "Reference ***" in (bundle / "predictions.csv").read_text()
    assert "[REDACTED:email]" in (bundle / "report.html").read_text()
    assert "[REDACTED:phone]" in (bundle / "report.md").read_text()
    assert "[REDACTED:email]" in (bundle / "misclassified.csv").read_text()
    compiled = (bundle.parent / "programs" / "zero_shot+labeled" / "compiled_program.json").read_text()
    assert "[REDACTED:email]" in compiled
    params = json.loads((bundle.parent / "session.json").read_text())["params"]
    assert params["lm.api_base"] == "http://***@127.0.0.1:9/v1"
    assert len(list(project.path.joinpath(".evals", "cache").rglob("*.json"))) > 0  # the local cache is raw


def test_secrets_helpers() -> None:
    assert mask_url_credentials("http://u:p@h:1/v1 and https://h/x?mail=a@b.org") == (
        "http://***@h:1/v1 and https://h/x?mail=a@b.org"
    )
    assert mask_url_credentials("https://x-access-token:ghp_x@github.com/o/r.git") == "https://***@github.com/o/r.git"
    assert scrub({"lm.api_base": "http://u:pw@h/v1", "url": "sqlite:///mlflow.db"}, environ={}) == {
        "lm.api_base": "http://***@h/v1",
        "url": "sqlite:///mlflow.db",
    }
    # The compile-cache key is a hash, not a secret, whatever its name says.
    assert scrub({"compile.key": "69100601ee8c75a3b019", "lm.api_key": "69100601ee8c75a3b019"}, environ={}) == {
        "compile.key": "69100601ee8c75a3b019",
        "lm.api_key": "***",
    }
    text = (
        '{"api_key": "abc123defg456", "password": "hunter2hunter2"} Authorization: Bearer abcdefghijklmnopqrstu '
        "AIzaSyA1234567890abcdefghijklmnopqrstuv "
        "-----BEGIN RSA PRIVATE KEY-----\nMIIB\n-----END RSA PRIVATE KEY-----"
    )
    assert scrub_text(text, environ={}) == ('{"api_key": "***", "password": "***"} Authorization: *** *** ***')


@pytest.mark.parametrize(
    "text",
    [
        "run 0123456789abcdef0123456789abcdef, commit 3f5e2a7c9d1b4e6f8a0c2e4d6b8f0a1c3e5d7f9b",
        "fingerprint 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "max_tokens=256 tokens: 12345678, keyboard = qwertyuiop, password reset pending",
        "sk-short is not a key, nor is skin-rash-and-itching-for-weeks or task-oriented",
    ],
)
def test_ordinary_text_is_not_masked(text: str) -> None:
    assert scrub_text(text, environ={}) == text


def test_real_symptom_texts_are_never_masked() -> None:
    from tests.conftest import SHARED_DATA

    if not (SHARED_DATA / "train.jsonl").is_file():
        pytest.skip("the shared dataset is not here")
    texts = [
        json.loads(line)["input_text"]
        for split in ("train", "test")
        for line in (SHARED_DATA / f"{split}.jsonl").read_text().splitlines()
        if line.strip()
    ]
    assert [t for t in texts if scrub_text(t, environ={}) != t] == []

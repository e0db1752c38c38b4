"""The LM response cache on disk exists only when it is used (``--evals-no-cache`` creates none)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dspy
import pytest

from evals.config.settings import resolve
from evals.harness.resources import Harness


@pytest.fixture(autouse=True)
def keep_dspy_cache() -> Iterator[None]:
    """Harness.lm configures dspy's global cache and LM: put them back for the other tests."""
    cache, lm, adapter = dspy.cache, dspy.settings.lm, dspy.settings.adapter
    yield
    dspy.cache = cache
    dspy.configure(lm=lm, adapter=adapter)


def harness(tmp_path: Path, *, no_cache: bool) -> Harness:
    cli = {
        "evals_lm": "openai/fake",
        "evals_lm_api_base": "http://127.0.0.1:9/v1",
        "evals_cache_dir": str(tmp_path / "cache"),
        "evals_no_cache": no_cache,
    }
    return Harness(resolve(cli, {}, {}, tmp_path))


def test_no_cache_creates_no_response_cache_on_disk(tmp_path: Path) -> None:
    lm = harness(tmp_path, no_cache=True).lm
    assert lm.cache is False
    # A fresh diskcache is 16 sqlite shards: about 0.7 s of every --evals-no-cache session's start, for nothing.
    assert not (tmp_path / "cache" / "lm").exists()


def test_the_response_cache_lives_in_the_cache_dir(tmp_path: Path) -> None:
    lm = harness(tmp_path, no_cache=False).lm
    assert lm.cache is True
    assert (tmp_path / "cache" / "lm").is_dir() and any((tmp_path / "cache" / "lm").iterdir())

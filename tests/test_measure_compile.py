"""programs.measure_compile: one compile measured on a scripted LM (the real run uses the embedded model)."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_a_compile_is_measured_with_every_lm_call_and_its_progress(
    tiny_data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import dspy
    from dspy.utils.dummies import DummyLM

    from programs.measure_compile import measure

    lm = DummyLM([{"diagnosis": "allergy"}] * 2_000, adapter=dspy.JSONAdapter())
    with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
        before = len(lm.history)
        result = measure("bootstrap_few_shot", "zero_shot", lm, tiny_data_dir, per_diagnosis=1)
        total = len(lm.history) - before

    # BootstrapFewShot runs the program on its training examples: those calls, and only those, are the compile's.
    assert 0 < result.lm_calls < total
    assert total - result.lm_calls == 2 * result.examples  # the evaluations before and after
    assert result.examples == 22
    assert result.accuracy_before == result.accuracy_after == pytest.approx(1 / 22)  # "allergy" for every text
    assert "zero_shot+bootstrap_few_shot: compile" in result.line()
    assert "compiled zero_shot+bootstrap_few_shot" in capsys.readouterr().err

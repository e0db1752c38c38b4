"""Named programs: the registry the suites, the compile cache and the reports read."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dspy

from evals.errors import ConfigError
from programs import knn, signatures
from programs.signatures import Diagnose


@dataclass(frozen=True)
class ProgramSpec:
    """A named way to build a DSPy program.

    Attributes:
        name: Registry name (used in test ids, thresholds.yaml and MLflow).
        description: One line for reports.
        build: Builds the program from the training examples.
    """

    name: str
    description: str
    build: Callable[[Sequence[dspy.Example]], dspy.Module]

    def source_hash(self) -> str:
        """Hash of the source that defines this program (its builder, modules and signature)."""
        sources = [inspect.getsource(signatures), inspect.getsource(self.build)]
        if self.name == "knn_few_shot":
            sources.append(inspect.getsource(knn))
        return hashlib.sha256("\n".join(sources).encode()).hexdigest()[:16]


def _zero_shot(trainset: Sequence[dspy.Example]) -> dspy.Module:
    return dspy.Predict(Diagnose)


def _chain_of_thought(trainset: Sequence[dspy.Example]) -> dspy.Module:
    return dspy.ChainOfThought(Diagnose)


def _knn_few_shot(trainset: Sequence[dspy.Example]) -> dspy.Module:
    return knn.KNNFewShotProgram(dspy.Predict(Diagnose), trainset, k=3)


PROGRAMS: dict[str, ProgramSpec] = {
    spec.name: spec
    for spec in (
        ProgramSpec("zero_shot", "dspy.Predict, no demos", _zero_shot),
        ProgramSpec("chain_of_thought", "dspy.ChainOfThought, no demos", _chain_of_thought),
        ProgramSpec("knn_few_shot", "Predict with the 3 nearest training examples (TF-IDF) as demos", _knn_few_shot),
    )
}


def get_program(name: str) -> ProgramSpec:
    """Return the named program; an unknown name raises ConfigError listing the known ones."""
    try:
        return PROGRAMS[name]
    except KeyError:
        raise ConfigError(f"unknown program {name!r}; known programs: {', '.join(sorted(PROGRAMS))}") from None

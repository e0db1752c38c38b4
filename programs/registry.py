"""Named programs: the registry the suites, the compile cache and the reports read."""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import dspy

from evals.errors import ConfigError
from programs import knn, reference, signatures
from programs.signatures import Diagnose


@dataclass(frozen=True)
class ProgramSpec:
    """A named way to build a DSPy program.

    Attributes:
        name: Registry name (used in test ids, thresholds.yaml and MLflow).
        description: One line for reports.
        build: Builds the program from the training examples.
        modules: Modules whose source defines the program besides its builder and the signature.
        reference: A baseline that calls no LM (every LM program is compared with it).
    """

    name: str
    description: str
    build: Callable[[Sequence[dspy.Example]], dspy.Module]
    modules: tuple[ModuleType, ...] = ()
    reference: bool = False

    def source_hash(self) -> str:
        """Hash of the source that defines this program (its builder, modules and signature)."""
        sources = [inspect.getsource(signatures), inspect.getsource(self.build)]
        sources.extend(inspect.getsource(module) for module in self.modules)
        return hashlib.sha256("\n".join(sources).encode()).hexdigest()[:16]


def _zero_shot(trainset: Sequence[dspy.Example]) -> dspy.Module:
    return dspy.Predict(Diagnose)


def _chain_of_thought(trainset: Sequence[dspy.Example]) -> dspy.Module:
    return dspy.ChainOfThought(Diagnose)


def _knn_few_shot(trainset: Sequence[dspy.Example]) -> dspy.Module:
    return knn.KNNFewShotProgram(dspy.Predict(Diagnose), trainset, k=3)


def _tfidf_logreg(trainset: Sequence[dspy.Example]) -> dspy.Module:
    return reference.TfidfLogRegProgram(trainset, c=10.0, seed=0)


PROGRAMS: dict[str, ProgramSpec] = {
    spec.name: spec
    for spec in (
        ProgramSpec("zero_shot", "dspy.Predict, no demos", _zero_shot),
        ProgramSpec("chain_of_thought", "dspy.ChainOfThought, no demos", _chain_of_thought),
        ProgramSpec(
            "knn_few_shot",
            "Predict with the 3 nearest training examples (TF-IDF) as demos",
            _knn_few_shot,
            modules=(knn,),
        ),
        ProgramSpec(
            "tfidf_logreg",
            "Reference without LM: TF-IDF + logistic regression fitted on the train split",
            _tfidf_logreg,
            modules=(reference,),
            reference=True,
        ),
    )
}


class KNNFewShot(knn.KNNFewShot):
    """:class:`programs.knn.KNNFewShot` with the module a compiled state loads into.

    Kept here rather than in ``programs.knn`` so that ``knn_few_shot``'s source hash stays as it was.
    """

    def shape(self, student: dspy.Module, trainset: Sequence[dspy.Example]) -> dspy.Module:
        """The module a compiled state loads into (the harness's compile cache stores only the state)."""
        return knn.KNNFewShotProgram(student, trainset, k=int(self.k))


OPTIMIZERS: dict[str, type] = {"KNNFewShot": KNNFewShot}
"""Optimizer classes besides dspy's that optimizers.yaml may name (the harness looks them up here)."""
OPTIMIZERS_FILE = Path(__file__).with_name("optimizers.yaml")
"""The optimizer configurations shipped with these programs (``--evals-optimizers`` default)."""


def get_program(name: str) -> ProgramSpec:
    """Return the named program; an unknown name raises ConfigError listing the known ones."""
    try:
        return PROGRAMS[name]
    except KeyError:
        raise ConfigError(f"unknown program {name!r}; known programs: {', '.join(sorted(PROGRAMS))}") from None


def reference_programs(registry: Mapping[str, ProgramSpec]) -> list[str]:
    """Names of the reference programs of a registry (specs with ``reference=True``), in registry order.

    Registries of other shapes (entries without the attribute) have none.
    """
    return [name for name, spec in registry.items() if getattr(spec, "reference", False)]

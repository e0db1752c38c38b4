"""The reference program: a TF-IDF + logistic-regression classifier, no LM at all.

Every LM program is worth running only if it beats this. It is fitted on the training
examples it is built with, deterministically, and saved as JSON state: the examples and
the settings it was fitted with (refitting them gives the same model; nothing is pickled).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import dspy

STATE_KEY = "tfidf_logreg"
FORMAT = 1


class TfidfLogRegProgram(dspy.Module):
    """Answer ``diagnosis`` with a scikit-learn TF-IDF + logistic-regression classifier.

    It has no predictors, so optimizers have nothing to tune and no LM is ever called;
    ``forward`` costs well under a millisecond.

    Args:
        trainset: Examples with ``symptoms`` and ``diagnosis``.
        c: Inverse regularisation strength of the logistic regression.
        seed: Random state of the solver (lbfgs is deterministic; kept for the record).
    """

    def __init__(self, trainset: Sequence[Any], *, c: float = 10.0, seed: int = 0) -> None:
        super().__init__()
        self.c = float(c)
        self.seed = int(seed)
        self._fit([(str(e.symptoms), str(e.diagnosis)) for e in trainset])

    def _fit(self, pairs: list[tuple[str, str]]) -> None:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline

        if len({label for _, label in pairs}) < 2:
            raise ValueError(f"{STATE_KEY} needs training examples of at least two diagnoses, got {len(pairs)} "
                             "example(s)")
        self._pairs = pairs
        self._model = make_pipeline(
            TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=1, stop_words="english"),
            LogisticRegression(C=self.c, max_iter=2000, random_state=self.seed),
        )
        self._model.fit([text for text, _ in pairs], [label for _, label in pairs])

    @property
    def train_fingerprint(self) -> str:
        """Hash of the training pairs and settings the classifier was fitted on."""
        data = json.dumps([self.c, self.seed, self._pairs], ensure_ascii=False)
        return hashlib.sha256(data.encode()).hexdigest()[:16]

    def forward(self, symptoms: str) -> dspy.Prediction:
        return dspy.Prediction(diagnosis=str(self._model.predict([str(symptoms)])[0]))

    def dump_state(self, json_mode: bool = True) -> dict[str, Any]:
        """JSON state: the training pairs and settings (the fit is rebuilt from them on load)."""
        return {STATE_KEY: {"format": FORMAT, "c": self.c, "seed": self.seed, "fingerprint": self.train_fingerprint,
                            "train": [list(pair) for pair in self._pairs]}}

    def load_state(self, state: dict[str, Any]) -> TfidfLogRegProgram:
        """Refit from a :meth:`dump_state` dict; a state of another shape raises ValueError."""
        body = state.get(STATE_KEY) if isinstance(state, dict) else None
        if not isinstance(body, dict) or body.get("format") != FORMAT:
            raise ValueError(f"not a {STATE_KEY} state (expected key {STATE_KEY!r} with format {FORMAT})")
        self.c, self.seed = float(body["c"]), int(body["seed"])
        self._fit([(str(text), str(label)) for text, label in body["train"]])
        if body.get("fingerprint") != self.train_fingerprint:
            raise ValueError(f"{STATE_KEY} state: fingerprint does not match its training examples")
        return self

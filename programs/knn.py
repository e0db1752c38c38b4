"""Retrieval few-shot: the nearest training examples (TF-IDF cosine) become the demos."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import dspy


def tfidf_embedder(texts: Sequence[str]) -> dspy.Embedder:
    """Return a dspy.Embedder of L2-normalised TF-IDF vectors fitted on ``texts`` (offline, no model)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), min_df=1, stop_words="english")
    vectorizer.fit(list(texts))
    return dspy.Embedder(lambda batch: vectorizer.transform(batch).toarray().astype("float32"), caching=False)


class KNNFewShotProgram(dspy.Module):
    """Run ``student`` with the ``k`` most similar training examples passed as its demos.

    Unlike ``dspy.KNNFewShot`` it makes no extra LM calls to bootstrap demos (the
    neighbours' labels are used as they are) and it saves and loads as plain JSON state.
    ``student`` must accept ``demos=`` (``dspy.Predict`` and ``dspy.ChainOfThought`` do).
    """

    def __init__(self, student: dspy.Module, trainset: Sequence[dspy.Example], k: int = 3) -> None:
        super().__init__()
        self.k = k
        self.student = student
        input_texts = [f"symptoms: {example.symptoms}" for example in trainset]
        self.knn = dspy.KNN(k, list(trainset), vectorizer=tfidf_embedder(input_texts))

    def forward(self, **inputs: Any) -> dspy.Prediction:
        return self.student(**inputs, demos=self.knn(**inputs))


class KNNFewShot:
    """The optimizer form: ``compile(student, trainset=...)`` wraps the student in KNNFewShotProgram."""

    def __init__(self, k: int = 3) -> None:
        self.k = k

    def compile(self, student: dspy.Module, *, trainset: Sequence[dspy.Example]) -> dspy.Module:
        return KNNFewShotProgram(student.reset_copy(), trainset, k=self.k)

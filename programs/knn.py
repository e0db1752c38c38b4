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
    """Predict with the ``k`` most similar training examples attached as demos.

    Unlike ``dspy.KNNFewShot`` it makes no extra LM calls to bootstrap demos (the
    neighbours' labels are used as they are) and it saves and loads as plain JSON state.
    """

    def __init__(self, signature: type[dspy.Signature], trainset: Sequence[dspy.Example], k: int = 3) -> None:
        super().__init__()
        self.k = k
        self.predict = dspy.Predict(signature)
        input_texts = [f"symptoms: {example.symptoms}" for example in trainset]
        self.knn = dspy.KNN(k, list(trainset), vectorizer=tfidf_embedder(input_texts))

    def forward(self, **inputs: Any) -> dspy.Prediction:
        demos = self.knn(**inputs)
        return self.predict(**inputs, demos=demos)

"""symptom-diagnosis-evals: pytest eval and regression harness for DSPy diagnosis programs."""

from __future__ import annotations

__version__ = "0.1.0"

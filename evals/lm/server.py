"""One local model server per session (``--evals-lm-server``), shared by every xdist worker.

With an in-process backend each worker loads its own copy of the model. For mlx-lm on
Apple Silicon one ``mlx_lm.server`` process serves all workers better (one copy in unified
memory, its own batching), so the controller starts it before the workers and points them
at its OpenAI-compatible endpoint; it is stopped when the session ends.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from evals.errors import LMUnavailable

STARTUP_TIMEOUT_S = 300.0


@dataclass
class LMServer:
    """A running model server: its process, its base URL and the model name it serves."""

    process: subprocess.Popen[bytes]
    api_base: str
    model: str
    log: Path

    def spec(self) -> str:
        """The LM spec workers use to reach it (litellm's OpenAI-compatible provider)."""
        return f"openai/{self.model}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_mlx_server(model_dir: Path, log_dir: Path, timeout_s: float = STARTUP_TIMEOUT_S) -> LMServer:
    """Start ``mlx_lm server`` for a local MLX model directory and wait until it answers."""
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"mlx_server_{port}.log"
    command = [
        sys.executable,
        "-m",
        "mlx_lm",
        "server",
        "--model",
        str(model_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--temp",
        "0",
    ]
    with log.open("wb") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
    server = LMServer(process, f"http://127.0.0.1:{port}/v1", str(model_dir), log)
    _wait_ready(server, timeout_s)
    return server


def _wait_ready(server: LMServer, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            break
        try:
            with urllib.request.urlopen(f"{server.api_base}/models", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    server.stop()
    tail = server.log.read_text(errors="replace").strip().splitlines()[-1:] if server.log.exists() else []
    raise LMUnavailable(
        f"mlx_lm server did not start within {timeout_s:.0f} s ({tail[0] if tail else 'no output'}; log: {server.log})"
    )

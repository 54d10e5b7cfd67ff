"""A real ``nagashi fleet serve`` process on a free loopback port, for the sync benchmarks
(``bench sync``, ``bench live``) and the PostgreSQL test cluster's port (not used by the agent)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class FleetServerProcess:
    """``nagashi fleet serve --root ROOT`` in a subprocess; ready when ``/healthz`` answers,
    within ``start_timeout_s`` (RuntimeError otherwise, the process stopped)."""

    def __init__(self, root: Path, start_timeout_s: float = 30.0) -> None:
        import httpx

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tools.cli", "fleet", "serve", "--root", str(root),
             "--port", str(self.port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=REPO,
        )  # fmt: skip
        deadline = time.monotonic() + start_timeout_s
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        self.close()
        raise RuntimeError("fleet server did not start")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)

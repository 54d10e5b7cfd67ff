"""Runs the local HTTP API with uvicorn in a background thread (loopback by default)."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import uvicorn

from agent.api.app import AgentState, create_app
from agent.errors import AgentError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ApiConfig:
    """Where the API listens; port 0 picks a free port (tests)."""

    host: str = "127.0.0.1"
    port: int = 8765
    startup_timeout_s: float = 10.0


def parse_listen(text: str) -> ApiConfig:
    """``HOST:PORT`` (``127.0.0.1:8765``) -> ApiConfig."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise AgentError(f"expected HOST:PORT for the API, got {text!r}")
    return ApiConfig(host=host.strip("[]"), port=int(port))


class ApiServer:
    """``start()`` returns once the socket listens; ``stop()`` shuts down and joins."""

    def __init__(self, state: AgentState, config: ApiConfig = ApiConfig()) -> None:
        self.config = config
        if config.host not in ("127.0.0.1", "localhost", "::1"):
            log.warning("the agent API listens on %s, not loopback", config.host)
        uv = uvicorn.Config(
            create_app(state),
            host=config.host,
            port=config.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=2,
        )
        self._server = uvicorn.Server(uv)
        self._thread = threading.Thread(target=self._server.run, name="agent-api", daemon=True)
        self.port = config.port

    def start(self) -> ApiServer:
        self._thread.start()
        deadline = time.monotonic() + self.config.startup_timeout_s
        while not self._server.started:
            if not self._thread.is_alive():
                raise AgentError(
                    f"the API could not listen on {self.config.host}:{self.config.port}"
                )
            if time.monotonic() > deadline:
                raise AgentError("the API did not start in time")
            time.sleep(0.02)
        sockets = [s for srv in self._server.servers for s in srv.sockets]
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        return self

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=self.config.startup_timeout_s)

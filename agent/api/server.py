"""Runs the local HTTP API with uvicorn in a background thread (loopback by default).

:meth:`ApiServer.start` binds and listens on the socket itself and returns at once; the thread
then imports starlette and uvicorn, builds the app and serves that socket. The agent's first
tick therefore does not wait for the web stack: a request that comes before it is up waits in
the socket's backlog and is answered as soon as it is.
"""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.api.state import AgentState
from agent.errors import AgentError

if TYPE_CHECKING:  # imported in the server's thread (start-up time, issue 20)
    import uvicorn

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
        self.state = state
        self._server: uvicorn.Server | None = None
        self._socket: socket.socket | None = None
        self._lock = threading.Lock()
        self._stopping = False
        self._thread = threading.Thread(target=self._serve, name="agent-api", daemon=True)
        self.port = config.port

    def _listen(self) -> socket.socket:
        host, port = self.config.host, self.config.port
        try:
            family = socket.AF_INET6 if ":" in host else socket.AF_INET  # "::1", else IPv4
            return socket.create_server((host, port), family=family)
        except OSError as e:
            raise AgentError(f"the API could not listen on {host}:{port}: {e}") from e

    def _serve(self) -> None:
        """The thread: the web stack is imported here, then serves the bound socket."""
        assert self._socket is not None
        try:
            import uvicorn

            from agent.api.app import create_app

            uv = uvicorn.Config(
                create_app(self.state),
                host=self.config.host,
                port=self.port,
                log_level="warning",
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=2,
            )
            with self._lock:
                self._server = uvicorn.Server(uv)
                self._server.should_exit = self._stopping
            self._server.run(sockets=[self._socket])
        except (Exception, SystemExit):  # the agent goes on guiding (and logging) without it
            log.exception("the API server stopped")
        finally:
            self._socket.close()

    def start(self) -> ApiServer:
        self._socket = self._listen()
        self.port = int(self._socket.getsockname()[1])
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            if self._server is not None:
                self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=self.config.startup_timeout_s)

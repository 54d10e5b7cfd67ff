"""A live, line-oriented TCP stream of GPS data, reconnecting: what the NMEA and gpsd sources
share (:class:`agent.gps.nmea.NmeaSocketSource`, :class:`agent.gps.gpsd.GpsdSource`)."""

from __future__ import annotations

import contextlib
import logging
import socket
from collections.abc import Iterator

from agent.clock import Clock
from agent.errors import GpsError
from agent.gps.trace import Fix

log = logging.getLogger(__name__)

#: NMEA 0183 allows 82 characters; leave room for proprietary talkers
MAX_LINE_BYTES = 256


class LineStreamSource:
    """A live line-oriented TCP stream that yields fixes; the connection logic of the sources.

    Yields ``None`` after every ``poll_s`` without a fix; when the connection drops it
    reconnects every ``reconnect_s`` (yielding ``None`` meanwhile) until the clock is stopped.
    Only the first connection must succeed. Subclasses turn lines into fixes.
    """

    max_line_bytes = MAX_LINE_BYTES

    def __init__(
        self,
        description: str,
        host: str,
        port: int,
        clock: Clock,
        connect_timeout_s: float,
        poll_s: float,
        reconnect_s: float,
    ) -> None:
        self.description = description
        self._addr = (host, port)
        self._clock = clock
        self._connect_timeout_s = connect_timeout_s
        self._poll_s = poll_s
        self._reconnect_s = reconnect_s
        self.reconnects = 0
        self._sock: socket.socket | None = self._connect()
        if self._sock is None:
            raise GpsError(f"cannot connect to {self.description}")

    # hooks ---------------------------------------------------------------------------------
    def _on_connect(self, sock: socket.socket) -> None:
        """Called on every new connection (send a request, reset state)."""

    def _on_line(self, line: str) -> Iterator[Fix | None]:
        raise NotImplementedError

    def _read_timeout(self) -> float:
        """How long to wait for bytes now; on silence :meth:`_on_silence` is called."""
        return self._poll_s

    def _on_silence(self) -> Iterator[Fix | None]:
        """No bytes for :meth:`_read_timeout`; by default: no fix for ``poll_s``."""
        yield None

    def _on_end(self) -> Iterator[Fix | None]:
        """The connection ended (what is pending is complete now)."""
        yield from ()

    # ---------------------------------------------------------------------------------------
    def _connect(self) -> socket.socket | None:
        try:
            sock = socket.create_connection(self._addr, timeout=self._connect_timeout_s)
            self._on_connect(sock)
        except OSError as e:
            log.warning("%s: %s", self.description, e)
            return None
        sock.settimeout(self._poll_s)
        return sock

    def now(self) -> float:
        return self._clock.now()

    def fixes(self) -> Iterator[Fix | None]:
        buf = b""
        while not self._clock.stopped:
            if self._sock is None:
                yield None
                if not self._clock.sleep(self._reconnect_s):
                    return
                self._sock = self._connect()
                self.reconnects += self._sock is not None
                buf = b""
                continue
            try:
                self._sock.settimeout(max(0.001, self._read_timeout()))
                chunk = self._sock.recv(4096)
            except TimeoutError:
                yield from self._on_silence()
                continue
            except OSError as e:
                chunk = b""
                log.warning("%s: %s", self.description, e)
            if not chunk:  # closed by the other side: reconnect
                yield from self._on_end()
                self._drop()
                continue
            buf += chunk
            *lines, buf = buf.split(b"\n")
            if len(buf) > self.max_line_bytes:
                log.warning("%s: dropping an over-long line", self.description)
                buf = b""
            for raw in lines:
                if len(raw) <= self.max_line_bytes:
                    yield from self._on_line(raw.decode("ascii", errors="replace"))

    def _drop(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

    def close(self) -> None:
        self._drop()

"""An httpx fetcher for python-tuf's ngclient: bounded time and size, HTTP Range resume.

python-tuf has no resume of interrupted downloads; this fetcher adds it. When a response body
breaks off (connection dropped, read timeout) it reconnects with ``Range: bytes=N-`` and, if the
server answers ``206`` with a matching ``Content-Range``, carries on from byte ``N``; a server
that ignores ranges (``200``) is read again from the start with the first ``N`` bytes skipped.
``5xx`` answers and connection errors are retried with exponential backoff and jitter, bounded by
``max_attempts`` and a whole-download deadline. Sizes are bounded by ngclient (``max_length``)
and, per response, by ``max_response_bytes``. Every error leaves as a ``tuf`` ``DownloadError``.
"""

from __future__ import annotations

import logging
import random
import re
import ssl
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
from tuf.api import exceptions as tuf_exc
from tuf.ngclient.fetcher import FetcherInterface

from sync._tls import certificate_problem, client_verify
from sync.backoff import backoff_delay_s

log = logging.getLogger(__name__)

_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


@dataclass(frozen=True)
class FetchConfig:
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 15.0  # between two received pieces
    download_deadline_s: float = 300.0  # one whole file, retries included
    max_attempts: int = 6  # connections per file (first one included)
    backoff_base_s: float = 0.25
    backoff_max_s: float = 8.0
    max_response_bytes: int = 64 << 20
    user_agent: str = "nagashi-sync"
    #: PEM file of the CA the server's certificate must chain to (None: the system's)
    ca_file: str | None = None


class CertificateRejected(tuf_exc.DownloadError):
    """The server's TLS certificate was refused: not retried (a wrong CA or host name)."""

    def __init__(self, url: str, problem: ssl.SSLCertVerificationError) -> None:
        super().__init__(f"{url}: TLS certificate refused: {problem}")
        self.url = url
        self.problem = problem


class HttpxFetcher(FetcherInterface):
    """``FetcherInterface`` over one ``httpx.Client`` (pass your own for tests/transport).

    ``sleep``, ``monotonic`` and ``rng`` are injected for tests. ``bytes_received`` counts
    every body byte read from the network (the benchmark reads it).
    """

    def __init__(
        self,
        config: FetchConfig | None = None,
        client: httpx.Client | None = None,
        *,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config or FetchConfig()
        c = self.config
        self._client = client or httpx.Client(
            timeout=httpx.Timeout(c.read_timeout_s, connect=c.connect_timeout_s),
            headers={"User-Agent": c.user_agent, "Accept-Encoding": "identity"},
            follow_redirects=False,
            verify=client_verify(c.ca_file),
        )
        self._sleep = sleep
        self._monotonic = monotonic
        self._rng = rng or random.Random()
        self.bytes_received = 0
        self.requests = 0

    def close(self) -> None:
        self._client.close()

    def _backoff(self, attempt: int) -> float:
        c = self.config
        return backoff_delay_s(attempt, c.backoff_base_s, c.backoff_max_s, self._rng)

    def _fetch(self, url: str) -> Iterator[bytes]:
        return self._stream(url)

    def _stream(self, url: str) -> Iterator[bytes]:
        c = self.config
        deadline = self._monotonic() + c.download_deadline_s
        received = 0  # bytes already handed to the caller
        attempt = 0
        last_error: BaseException | None = None
        while True:
            attempt += 1
            if attempt > c.max_attempts or self._monotonic() > deadline:
                raise tuf_exc.DownloadError(
                    f"giving up on {url} after {attempt - 1} attempts: {last_error}"
                ) from last_error
            if attempt > 1:
                self._sleep(self._backoff(attempt - 1))
            headers = {"Range": f"bytes={received}-"} if received else {}
            try:
                self.requests += 1
                with self._client.stream("GET", url, headers=headers) as r:
                    skip = 0
                    if r.status_code == 206 and received:
                        m = _CONTENT_RANGE.match(r.headers.get("content-range", ""))
                        if not m or int(m.group(1)) != received:
                            raise tuf_exc.DownloadError(
                                f"{url}: bad Content-Range {r.headers.get('content-range')!r}"
                            )
                    elif r.status_code == 200:
                        skip = received  # server ignored Range: read again, drop the prefix
                    elif r.status_code >= 500 or r.status_code == 429:
                        last_error = tuf_exc.DownloadHTTPError(
                            f"{url}: HTTP {r.status_code}", r.status_code
                        )
                        continue
                    else:
                        raise tuf_exc.DownloadHTTPError(
                            f"{url}: HTTP {r.status_code}", r.status_code
                        )
                    encoding = r.headers.get("content-encoding", "identity").lower()
                    if encoding not in ("identity", ""):
                        # byte offsets for Range would not be the file's: refuse
                        raise tuf_exc.DownloadError(f"{url}: unexpected {encoding} encoding")
                    length = r.headers.get("content-length")
                    if length is not None and int(length) > c.max_response_bytes:
                        raise tuf_exc.DownloadLengthMismatchError(
                            f"{url}: {length} bytes is more than {c.max_response_bytes}"
                        )
                    got = 0
                    for piece in r.iter_bytes():
                        self.bytes_received += len(piece)
                        got += len(piece)
                        if got > c.max_response_bytes + skip:
                            raise tuf_exc.DownloadLengthMismatchError(
                                f"{url}: more than {c.max_response_bytes} bytes"
                            )
                        if self._monotonic() > deadline:
                            raise tuf_exc.SlowRetrievalError(f"{url}: download deadline passed")
                        if skip:
                            drop = min(skip, len(piece))
                            piece = piece[drop:]
                            skip -= drop
                        if piece:
                            received += len(piece)
                            yield piece
                    return
            except (httpx.TransportError, httpx.StreamError) as e:
                problem = certificate_problem(e)
                if problem is not None:  # a configuration to fix: retrying cannot help
                    raise CertificateRejected(url, problem) from e
                # connection refused/reset, body cut short, read timeout: resume
                log.debug("%s: %s after %d bytes; resuming", url, type(e).__name__, received)
                last_error = e
            except ValueError as e:  # bad Content-Length header
                raise tuf_exc.DownloadError(f"{url}: bad response: {e}") from e

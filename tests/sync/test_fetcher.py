"""The httpx TUF fetcher: Range resume, retries with backoff, bounds (httpx.MockTransport)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import httpx
import pytest
from tuf.api import exceptions as tuf_exc

from sync.fetcher import FetchConfig, HttpxFetcher

DATA = bytes(range(256)) * 40  # 10 240 bytes
URL = "http://fleet.test/targets/x"


class Cut(httpx.SyncByteStream):
    """A body that breaks off after ``n`` bytes (connection dropped mid-body)."""

    def __init__(self, data: bytes, n: int) -> None:
        self.data, self.n = data, n

    def __iter__(self) -> Iterator[bytes]:
        yield self.data[: self.n]
        if self.n < len(self.data):
            raise httpx.RemoteProtocolError("peer closed connection mid-body")


def fetcher(
    handler: Callable[[httpx.Request], httpx.Response], **cfg: float
) -> tuple[HttpxFetcher, list[float]]:
    sleeps: list[float] = []
    f = HttpxFetcher(
        FetchConfig(**cfg),  # type: ignore[arg-type]  # the tests pass only float fields
        httpx.Client(transport=httpx.MockTransport(handler)),
        sleep=sleeps.append,
        rng=random.Random(0),
    )
    return f, sleeps


def _range_start(request: httpx.Request) -> int:
    r = request.headers.get("range")
    return int(r.removeprefix("bytes=").rstrip("-")) if r else 0


def test_resumes_a_cut_body_with_range() -> None:
    seen: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        start = _range_start(request)
        seen.append(start)
        headers = {"content-length": str(len(DATA) - start)}
        if start:
            headers["content-range"] = f"bytes {start}-{len(DATA) - 1}/{len(DATA)}"
        cut = 3000 if len(seen) < 3 else len(DATA)
        return httpx.Response(206 if start else 200, headers=headers, stream=Cut(DATA[start:], cut))

    f, sleeps = fetcher(handler)
    assert f.download_bytes(URL, len(DATA)) == DATA
    assert seen == [0, 3000, 6000]
    assert len(sleeps) == 2 and all(s > 0 for s in sleeps)


def test_server_that_ignores_range_is_read_again_and_prefix_dropped() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(_range_start(request))
        n = 5000 if len(calls) == 1 else len(DATA)
        return httpx.Response(200, headers={"content-length": str(len(DATA))}, stream=Cut(DATA, n))

    f, _ = fetcher(handler)
    assert f.download_bytes(URL, len(DATA)) == DATA
    assert calls == [0, 5000]


def test_wrong_content_range_is_refused() -> None:
    calls: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        if len(calls) == 1:
            return httpx.Response(200, stream=Cut(DATA, 100))
        return httpx.Response(206, headers={"content-range": "bytes 0-99/10240"}, content=DATA)

    f, _ = fetcher(handler)
    with pytest.raises(tuf_exc.DownloadError, match="Content-Range"):
        f.download_bytes(URL, len(DATA))


def test_5xx_is_retried_and_404_is_not() -> None:
    statuses = iter([500, 503, 200])

    def flaky(request: httpx.Request) -> httpx.Response:
        s = next(statuses)
        return httpx.Response(s, content=DATA if s == 200 else b"x")

    f, sleeps = fetcher(flaky)
    assert f.download_bytes(URL, len(DATA)) == DATA and len(sleeps) == 2

    n404: list[int] = []

    def missing(request: httpx.Request) -> httpx.Response:
        n404.append(1)
        return httpx.Response(404)

    f, _ = fetcher(missing)
    with pytest.raises(tuf_exc.DownloadHTTPError) as e:
        f.download_bytes(URL, 10)
    assert e.value.status_code == 404 and len(n404) == 1  # ngclient reads 404 as "no newer root"


def test_gives_up_after_max_attempts_with_growing_capped_backoff() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    f, sleeps = fetcher(down, max_attempts=5, backoff_base_s=1.0, backoff_max_s=4.0)
    with pytest.raises(tuf_exc.DownloadError, match="after 5 attempts"):
        f.download_bytes(URL, 10)
    assert len(sleeps) == 4 and f.requests == 5
    for s, cap in zip(sleeps, [1, 2, 4, 4], strict=True):
        assert cap / 2 <= s <= cap


def test_deadline_bounds_a_slow_download() -> None:
    clock = [0.0]

    def tick() -> float:
        clock[0] += 10.0
        return clock[0]

    class Slow(httpx.SyncByteStream):
        def __iter__(self) -> Iterator[bytes]:
            for i in range(0, len(DATA), 100):
                yield DATA[i : i + 100]

    f = HttpxFetcher(
        FetchConfig(download_deadline_s=50.0),
        httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200, stream=Slow()))),
        sleep=lambda s: None,
        monotonic=tick,
    )
    with pytest.raises(tuf_exc.SlowRetrievalError, match="deadline"):
        f.download_bytes(URL, len(DATA))


def test_more_than_max_length_is_refused() -> None:
    f, _ = fetcher(lambda r: httpx.Response(200, content=DATA))
    with pytest.raises(tuf_exc.DownloadLengthMismatchError):
        f.download_bytes(URL, len(DATA) - 1)

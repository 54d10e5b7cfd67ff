"""What ``nagashi fleet serve`` bounds (issue 13, items 7 and 10), against a real server process
on loopback: slow clients get 408, too many connections from one address get 429 (and a
well-behaved client is still answered, even under a low open-files limit), requests per token
are rate-limited; a port in use or a mistyped root is one line and exit status 2."""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from sync import FleetRepository
from sync.logstore import SqliteLogStorage
from tests.sync.conftest import utcnow

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
#: Loopback addresses of their own for the attackers (Linux routes all of 127/8 to lo).
SLOW_IP = "127.0.0.2"


@pytest.fixture
def fleet_root(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    root = tmp_path / "fleet"
    FleetRepository(root).init(utcnow())
    store = SqliteLogStorage(root / "fleet.sqlite")
    try:
        tokens = {
            "cab": store.add_token("vehicle", "cab-1", 0.0),
            "ana": store.add_token("engineer", "ana", 0.0),
            "bo": store.add_token("engineer", "bo", 0.0),
        }
    finally:
        store.close()
    return root, tokens


def _cli(*argv: str) -> list[str]:
    return [sys.executable, "-m", "tools.cli", *argv]


@contextmanager
def fleet_serve(root: Path, *options: str, nofile: int | None = None) -> Iterator[str]:
    """``nagashi fleet serve`` as its own process (RLIMIT_NOFILE lowered to ``nofile``)."""

    def limit_files() -> None:
        if nofile is not None:  # soft and hard: as on a host with `ulimit -n` set low
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

    log = root.parent / "serve.log"  # a file, not a pipe: a full pipe would block the server
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            _cli("fleet", "serve", "--root", str(root), "--port", "0", *options),
            stderr=fh,
            text=True,
            env=ENV,
            preexec_fn=limit_files,
        )
    try:
        ready: list[str] = []
        for _ in range(600):
            ready = [line for line in log.read_text().splitlines() if line.startswith("serving ")]
            if ready or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert ready, log.read_text()
        yield ready[0].split(" on ", 1)[1].strip().rstrip("/")
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        assert "Traceback" not in log.read_text(), log.read_text()


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _answer(s: socket.socket) -> bytes:
    """Everything the server sends before it closes (the timeout only guards a hang)."""
    s.settimeout(60)
    out = b""
    try:
        while chunk := s.recv(65536):
            out += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    s.close()
    return out


def _status(answer: bytes) -> str:
    return answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/1.1 ") else "none"


def test_slowloris_does_not_starve_a_well_behaved_client(
    fleet_root: tuple[Path, dict[str, str]],
) -> None:
    """200 connections that never finish their headers, against a server allowed 128 open
    files: the good client is answered, the slow ones get 429 (past 32 per address) or 408."""
    root, _ = fleet_root
    options = ["--header-timeout", "2", "--max-connections", "64"]
    with fleet_serve(root, *options, nofile=128) as url:
        slow = []
        for _ in range(200):
            s = socket.socket()
            s.bind((SLOW_IP, 0))
            s.connect(("127.0.0.1", _port(url)))
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: fleet\r\nX-Slow: ")  # never ends
            slow.append(s)
        good = httpx.get(f"{url}/healthz", timeout=30)
        assert good.status_code == 200 and good.json() == {"ok": True}
        statuses = Counter(_status(_answer(s)) for s in slow)
    assert statuses["429"] >= 200 - 32, statuses
    assert statuses["408"] + statuses["429"] == 200, statuses


def test_slow_body_gets_408_and_tokens_are_rate_limited(
    fleet_root: tuple[Path, dict[str, str]],
) -> None:
    root, tokens = fleet_root
    with fleet_serve(
        root, "--body-timeout", "1", "--token-burst", "5", "--token-rate", "0.01"
    ) as url:
        s = socket.create_connection(("127.0.0.1", _port(url)))
        s.sendall(
            b"POST /v1/logs HTTP/1.1\r\nHost: fleet\r\nContent-Type: application/msgpack\r\n"
            + f"Authorization: Bearer {tokens['cab']}\r\n".encode()
            + b"Content-Length: 1000\r\n\r\n"
            + b"\x85" * 10  # 10 of the 1,000 bytes, then nothing
        )
        answer = _answer(s)
        assert _status(answer) == "408", answer
        assert b"request body not received within 1 s" in answer

        with httpx.Client(base_url=url, timeout=30) as client:

            def read(who: str) -> httpx.Response:
                auth = {"Authorization": f"Bearer {tokens[who]}"}
                return client.get("/v1/vehicles/cab-1/logs", headers=auth)

            assert [read("ana").status_code for _ in range(5)] == [200] * 5
            over = read("ana")
            assert over.status_code == 429 and int(over.headers["retry-after"]) >= 1
            assert "for this token" in over.json()["error"]
            assert read("bo").status_code == 200  # another token has its own bucket


def test_serve_on_a_port_in_use_is_one_line(fleet_root: tuple[Path, dict[str, str]]) -> None:
    root, _ = fleet_root
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        r = subprocess.run(
            _cli("fleet", "serve", "--root", str(root), "--port", str(port)),
            capture_output=True,
            text=True,
            env=ENV,
            timeout=60,
            check=False,
        )
    assert r.returncode == 2, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert (
        r.stderr.startswith("nagashi: error: cannot listen on 127.0.0.1:") and "in use" in r.stderr
    )


def test_serve_on_a_mistyped_root_creates_nothing(tmp_path: Path) -> None:
    r = subprocess.run(
        _cli("fleet", "serve", "--root", str(tmp_path / "typo"), "--port", "0"),
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
        check=False,
    )
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "holds no fleet repository" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_listening_socket_gives_connections_tcp_nodelay() -> None:
    """asyncio sets TCP_NODELAY only on sockets whose protocol is IPPROTO_TCP; a socket made by
    socket.create_server has protocol 0, so every response written in two pieces (headers,
    body) waited for the client's delayed ACK (about 40 ms per request, found by
    ``nagashi bench fleet``). The accepted socket inherits the listening socket's protocol."""
    from sync.server import listen

    with listen("127.0.0.1", 0) as sock:
        assert sock.proto == socket.IPPROTO_TCP
        with socket.create_connection(sock.getsockname()[:2]):
            conn, _ = sock.accept()
            with conn:
                assert conn.proto == socket.IPPROTO_TCP  # so asyncio sets TCP_NODELAY on it

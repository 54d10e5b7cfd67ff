"""Issue 19, TLS behind nginx as deployed: the shipped deploy/nginx/nagashi-fleet.conf in front
of a real ``nagashi fleet serve``, with a test CA and server certificate made here.

Real components: Debian's nginx on a loopback port (tests/components.py), a real fleet server
process, the cab's and the engineer's commands (``bundle pull``, ``logs pull``) and the upload
client the agent uses. The cab verifies the certificate against ``--ca-file`` and refuses
another CA's certificate or a wrong host name with one line and exit 2, changing nothing."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from sync import LogClient, LogClientConfig, LogUploader, Outbox
from sync.logstore import SqliteLogStorage
from tests.components import require
from tests.sync.conftest import Fleet, fleet_serve, utcnow
from tests.tlsca import TestCA
from tools.cli import main

REPO = Path(__file__).resolve().parents[2]
SITE = REPO / "deploy" / "nginx" / "nagashi-fleet.conf"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def site_config(root: Path, port: int, upstream: str, crt: Path, key: Path) -> str:
    """The shipped example with this machine's paths and ports (every replaced text must be
    there: the test fails if the example drifts)."""
    text = SITE.read_text()
    for old, new in [
        ("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;"),
        ("/srv/nagashi-fleet", str(root)),
        ("/etc/nagashi/tls/fleet.crt", str(crt)),
        ("/etc/nagashi/tls/fleet.key", str(key)),
        ("server 127.0.0.1:8470;", f"server {upstream};"),
    ]:
        assert old in text, f"{SITE} no longer contains {old!r}"
        text = text.replace(old, new)
    return text


def _wait_port(port: int, proc: subprocess.Popen[bytes], err: Path) -> None:
    for _ in range(500):
        if proc.poll() is not None:
            raise AssertionError(f"nginx exited: {err.read_text()[-2000:]}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(0.02)
    raise AssertionError("nginx did not listen")


@dataclass
class Proxied:
    url: str  # https://127.0.0.1:PORT (the certificate's name)
    port: int
    ca: Path
    other_ca: Path
    tokens: dict[str, str]
    server: subprocess.Popen[str]
    fleet: Fleet


@pytest.fixture
def proxied(fleet: Fleet, tmp_path: Path) -> Iterator[Proxied]:
    nginx = require("nginx")
    tls = tmp_path / "tls"
    tls.mkdir()
    ca, other = TestCA("nagashi test CA"), TestCA("another CA")
    crt, key = ca.issue(tls, "fleet", dns=[], ips=["127.0.0.1"])  # not valid for "localhost"
    storage = SqliteLogStorage(fleet.root / "fleet.sqlite")
    tokens = {
        "cab-1": storage.add_token("vehicle", "cab-1", 0.0),
        "ana": storage.add_token("engineer", "ana", 0.0),
    }
    storage.close()
    port = _free_port()
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    with fleet_serve(fleet.root, "--max-connections-per-ip", "512") as (upstream, server):
        (prefix / "site.conf").write_text(
            site_config(fleet.root, port, upstream.removeprefix("http://"), crt, key)
        )
        temp = " ".join(
            f"{kind}_temp_path {prefix / kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        (prefix / "nginx.conf").write_text(
            ("user root;\n" if os.geteuid() == 0 else "")
            + f"worker_processes 1;\ndaemon off;\npid {prefix / 'nginx.pid'};\n"
            f"error_log {prefix / 'error.log'} warn;\n"
            "events { worker_connections 256; }\n"
            f"http {{ access_log off; {temp} include {prefix / 'site.conf'}; }}\n"
        )
        err = prefix / "error.log"
        proc = subprocess.Popen(
            [nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", str(err)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            _wait_port(port, proc, err)
            yield Proxied(
                f"https://127.0.0.1:{port}",
                port,
                ca.write_ca(tls / "ca.pem"),
                other.write_ca(tls / "other-ca.pem"),
                tokens,
                server,
                fleet,
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def _store_state(store: Path) -> dict[str, Any]:
    current = store / "current.json"
    return {
        "current": current.read_text() if current.exists() else None,
        "bundles": sorted(p.name for p in (store / "bundles").iterdir())
        if (store / "bundles").is_dir()
        else [],
    }


def test_the_cab_verifies_the_proxys_certificate_and_refuses_a_wrong_one(
    proxied: Proxied, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = proxied.fleet
    root_json = str(f.repo.trusted_root_path())
    store = tmp_path / "cab"

    def pull(url: str, *ca: str) -> int:
        return main(["bundle", "pull", "--store", str(store), "--server", url,
                     "--area", "monaco", "--trusted-root", root_json, "--json", *ca])  # fmt: skip

    assert pull(proxied.url, "--ca-file", str(proxied.ca)) == 0
    assert json.loads(capsys.readouterr().out)["bundle_id"] == f.bundles["v1"].bundle_id
    f.repo.publish(f.bundles["v2"].path, "monaco", utcnow())
    before = _store_state(store)
    refusals = [
        (proxied.url, "--ca-file", str(proxied.other_ca)),  # a certificate from another CA
        (f"https://localhost:{proxied.port}", "--ca-file", str(proxied.ca)),  # wrong host name
        (proxied.url,),  # the system's trust store does not know the test CA
    ]
    for url, *ca in refusals:
        assert pull(url, *ca) == 2, (url, ca)
        out = capsys.readouterr()
        assert out.out == "" and out.err.count("\n") == 1 and "certificate" in out.err, out.err
        assert _store_state(store) == before  # nothing changed
    assert pull(proxied.url, "--ca-file", str(proxied.ca)) == 0
    assert json.loads(capsys.readouterr().out)["bundle_id"] == f.bundles["v2"].bundle_id

    # trip logs: the agent's upload client and the engineer's logs pull, through nginx
    with Outbox(tmp_path / "outbox.sqlite") as ob:
        ob.append_many(({"kind": "tick", "i": i}, 1000.0 + i) for i in range(30))
        wrong = LogClient(proxied.url, proxied.tokens["cab-1"], LogClientConfig(ca_file=None))
        with pytest.raises(Exception, match="certificate is refused"):
            LogUploader(ob, wrong, "cab-1", sleep=lambda s: None).flush()
        wrong.close()
        assert ob.stats()["records"] == 30  # kept, nothing sent
        good = LogClient(
            proxied.url, proxied.tokens["cab-1"], LogClientConfig(ca_file=str(proxied.ca))
        )
        assert LogUploader(ob, good, "cab-1", sleep=lambda s: None).flush().remaining == 0
        good.close()
    token = tmp_path / "ana.token"
    token.write_text(proxied.tokens["ana"])
    out_file = tmp_path / "pulled.msgpack"
    args = ["logs", "pull", "--server", proxied.url, "--vehicle", "cab-1", "--since", "0",
            "--token-file", str(token), "--out", str(out_file), "--json"]  # fmt: skip
    assert main([*args, "--ca-file", str(proxied.other_ca)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "certificate" in err and not out_file.exists()
    assert main([*args, "--ca-file", str(proxied.ca)]) == 0
    assert json.loads(capsys.readouterr().out)["records"] == 30
    assert main([*args, "--ca-file", str(tmp_path / "missing.pem")]) == 2
    assert "--ca-file" in capsys.readouterr().err


def test_nginx_serves_the_repository_itself_and_bounds_the_api(proxied: Proxied) -> None:
    ctx = ssl.create_default_context(cafile=str(proxied.ca))
    with httpx.Client(base_url=proxied.url, verify=ctx, timeout=30) as c:
        chunks = sorted((proxied.fleet.root / "repo" / "targets" / "chunks").iterdir())
        part = c.get(f"/targets/chunks/{chunks[0].name}", headers={"Range": "bytes=10-19"})
        assert part.status_code == 206 and part.content == chunks[0].read_bytes()[10:20]
        assert "immutable" in part.headers["cache-control"]
        ts = c.get("/metadata/timestamp.json")
        assert ts.status_code == 200 and ts.headers["cache-control"] == "no-cache"
        assert c.get("/keys/root.pem").status_code == 404  # only repo/ is served
        assert c.get("/fleet.sqlite").status_code == 404
        assert c.get("/healthz").status_code == 200  # proxied

        big = c.post("/v1/logs", content=b"x" * (5 << 20))
        assert big.status_code == 413  # nginx's body limit, before the app
        auth = {"Authorization": f"Bearer {proxied.tokens['ana']}"}
        codes = [c.get("/v1/vehicles/cab-1/logs", headers=auth) for _ in range(300)]
        limited = [r for r in codes if r.status_code == 429]
        assert limited and not limited[0].headers.get("content-type", "").startswith(
            "application/json"
        )  # refused by nginx's per-token limit (the app's 429 is JSON)

        # the repository stays served with the app down: nginx reads the files itself
        proxied.server.terminate()
        proxied.server.wait(10)
        assert c.get("/metadata/timestamp.json").content == ts.content
        assert c.get("/healthz").status_code == 502

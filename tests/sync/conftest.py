"""Fixtures of the sync tests: bundles built from real Monaco tiles, a fleet repository, and a
real uvicorn server on 127.0.0.1 (ephemeral port) started and stopped by each test."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from sync import Bundle, BundleInputs, BundleStore, FleetRepository, build_bundle
from sync._fixtures import base_manifest, change_one_tile, composed, tiles_meta, write_inputs
from sync.server import create_app

REPO = Path(__file__).resolve().parents[2]


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@contextmanager
def run_server(app: Any, log_level: str = "warning") -> Iterator[str]:
    """Serve ``app`` with uvicorn in a thread on 127.0.0.1:<ephemeral>; yield the base URL."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, log_level=log_level, lifespan="off", access_log=False
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        for _ in range(1000):
            if server.started:
                break
            thread.join(0.01)
        assert server.started, "uvicorn did not start"
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        assert not thread.is_alive(), "uvicorn did not stop"


@contextmanager
def fleet_serve(
    root: Path, *args: str, port: int = 0
) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """A real ``nagashi fleet serve --root ROOT ARGS`` process on 127.0.0.1 (``port`` 0: an
    ephemeral one); yields its URL once it answers /healthz; stopped after."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tools.cli", "fleet", "serve", "--root", str(root),
         "--port", str(port), *args],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # "serving ROOT on http://127.0.0.1:PORT/" once bound
        m = re.search(r"on (http://127\.0\.0\.1:\d+)/", line)
        assert m, f"fleet serve did not start: {line}{proc.stderr.read()[-2000:]}"
        url = m.group(1)
        for _ in range(300):
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                proc.wait(0.05) if proc.poll() is not None else None
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@dataclass
class Fleet:
    """A fleet repository with published bundles and a device store."""

    root: Path
    repo: FleetRepository
    bundles: dict[str, Bundle]
    device: Path
    work: Path

    @property
    def trusted_root(self) -> bytes:
        return self.repo.trusted_root_path().read_bytes()

    def store(self) -> BundleStore:
        return BundleStore(self.device)


def make_bundle(
    work: Path,
    tiles: Path,
    name: str,
    *,
    area: str = "monaco",
    change_tile: int | None = None,
    **versions: str,
) -> Bundle:
    src = work / f"inputs-{name}"
    src.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(tiles, src / "tiles.sqlite")
    if change_tile is not None:
        change_one_tile(src / "tiles.sqlite", change_tile)
    m = base_manifest(tiles_meta(tiles)["source_sha256"], area=area, **versions)
    paths = write_inputs(src, src / "tiles.sqlite", m)
    inputs = BundleInputs(paths["tiles"], paths["demand"], paths["params"], paths["area"])
    return build_bundle(composed(m), inputs, work / "built")


@pytest.fixture(scope="session")
def bundle_pair(tmp_path_factory: pytest.TempPathFactory, monaco_tiles: Path) -> dict[str, Bundle]:
    """Two bundles of Monaco: v1, and v2 where one tile changed (built once)."""
    work = tmp_path_factory.mktemp("bundles")
    return {
        "v1": make_bundle(work, monaco_tiles, "v1"),
        "v2": make_bundle(work, monaco_tiles, "v2", change_tile=3, params="params-2"),
        "v3": make_bundle(work, monaco_tiles, "v3", change_tile=7, params="params-3"),
    }


@pytest.fixture
def fleet(tmp_path: Path, bundle_pair: dict[str, Bundle]) -> Fleet:
    root = tmp_path / "fleet"
    repo = FleetRepository(root)
    repo.init(utcnow())
    repo.publish(bundle_pair["v1"].path, "monaco", utcnow())
    return Fleet(root, repo, bundle_pair, tmp_path / "device", tmp_path)


@pytest.fixture
def serve() -> Callable[..., Any]:
    """``with serve(root) as url:`` runs the fleet app (optionally wrapped) on loopback."""

    @contextmanager
    def _serve(root: Path, wrap: Callable[[Any], Any] | None = None) -> Iterator[str]:
        app = create_app(root)
        level = "critical" if wrap else "warning"  # a flaky wrapper raises on purpose
        with run_server(wrap(app) if wrap else app, log_level=level) as url:
            yield url

    return _serve


def accept_all(bundle: Bundle) -> None:
    """A health check that only verifies the files (for tests not about health)."""
    bundle.verify()


# ----------------------------------------------------------------------------- log storage
@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Any]:
    """A throwaway PostgreSQL cluster on a loopback port (tests/pgcluster.py), for the session;
    always stopped and removed."""
    from tests.pgcluster import PgCluster

    cluster = PgCluster()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(params=["sqlite", "postgresql"])
def log_backend(request: pytest.FixtureRequest) -> Iterator[Callable[[Path], Any]]:
    """``make(root)``: a fresh log storage of the parametrised back end (SQLite in ``root``,
    or a new database in the session's PostgreSQL cluster); closed after the test."""
    made: list[Any] = []
    cluster = request.getfixturevalue("pg_cluster") if request.param == "postgresql" else None

    def make(root: Path) -> Any:
        from sync.logstore import open_storage

        database = cluster.database() if cluster is not None else None
        storage = open_storage(root, database)
        storage.database = database  # type: ignore[attr-defined]  # for CLI/process tests
        made.append(storage)
        return storage

    make.backend = request.param  # type: ignore[attr-defined]  # tests read which backend they got
    yield make
    for s in made:
        s.close()

"""A throwaway PostgreSQL cluster (tests and ``nagashi bench fleet``): ``initdb`` into a
temporary directory, ``pg_ctl start`` on a free loopback port (its socket in that directory
too), stopped and removed by :meth:`PgCluster.destroy`. As root, the server runs as the
``postgres`` user (PostgreSQL refuses to run as root). Debian's binaries are found in
/usr/lib/postgresql/<version>/bin when they are not on PATH."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from sync._serve_process import free_port

SEARCH_DIRS = ("/usr/lib/postgresql/17/bin", "/usr/lib/postgresql/16/bin",
               "/usr/lib/postgresql/15/bin")  # fmt: skip


def find_binary(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path=os.pathsep.join(SEARCH_DIRS))


def _require(name: str) -> str:
    path = find_binary(name)
    if path is None:
        raise FileNotFoundError(f"{name} not found (apt-get install postgresql)")
    return path


class PgCluster:
    """One running cluster; :meth:`database` makes a fresh database and returns its URL."""

    def __init__(self, initdb: str | None = None, pg_ctl: str | None = None) -> None:
        self.initdb = initdb or _require("initdb")
        self.pg_ctl = pg_ctl or _require("pg_ctl")
        self.as_user: list[str] = []
        self.base = Path(tempfile.mkdtemp(prefix="nagashi-pg-"))
        if os.geteuid() == 0:
            self.as_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.base, "postgres", "postgres")
        self.data = self.base / "data"
        self.port = free_port()
        self._names = itertools.count(1)
        self._run(
            [
                self.initdb,
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ]
        )
        self.start()

    def _run(self, cmd: list[str]) -> None:
        subprocess.run(
            [*self.as_user, *cmd],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=self.base,
            timeout=120,
        )

    def start(self) -> None:
        opts = (
            f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c max_connections=200"
        )
        log = str(self.base / "log")
        self._run([self.pg_ctl, "-D", str(self.data), "-l", log, "-o", opts, "-w", "start"])

    def stop(self, mode: str = "fast") -> None:
        self._run([self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "stop"])

    def restart(self) -> None:
        """Stop (fast: open connections are cut) and start again, as a database failover."""
        self.stop("fast")
        self.start()

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def database(self) -> str:
        """A new, empty database; its URL."""
        import psycopg

        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

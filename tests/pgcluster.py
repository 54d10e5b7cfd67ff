"""The throwaway PostgreSQL cluster of the tests (sync/_pgcluster.py), its binaries found by
tests/components.py: a missing PostgreSQL skips on a developer's machine and fails under
CI=true."""

from __future__ import annotations

from sync._pgcluster import PgCluster as _Cluster
from tests.components import require


class PgCluster(_Cluster):
    def __init__(self) -> None:
        require("postgres")
        super().__init__(require("initdb"), require("pg_ctl"))

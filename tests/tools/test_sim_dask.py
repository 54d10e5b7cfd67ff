"""``nagashi simulate --dask``: the runs on a real Dask cluster (a ``distributed.LocalCluster``
of worker processes on 127.0.0.1) give the very JSON of ``--jobs 1``; a scheduler that cannot be
reached, or an address that is not one, is one line and exit status 2."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.components import in_ci

ROOT = Path(__file__).resolve().parents[2]


def require_distributed() -> None:
    """Skip (developer) or fail (CI=true: the dev extra installs it) without ``distributed``."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        reason = "distributed not installed (pip install -e '.[sim]')"
        if in_ci():
            pytest.fail(f"CI=true and a real component is missing: {reason}", pytrace=False)
        pytest.skip(reason)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A LocalCluster (2 worker processes, 1 thread each) on loopback; its scheduler runs in
    this process (``cluster.scheduler``)."""
    require_distributed()
    from distributed import LocalCluster

    with LocalCluster(  # type: ignore[no-untyped-call]  # distributed leaves it unannotated
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address=None,
    ) as running:
        yield running


def _simulate(
    tiles: Path, demand: Path, extra: list[str], capsys: pytest.CaptureFixture[str]
) -> dict[str, Any]:
    from tools.cli import main

    rc = main(
        [
            *("simulate", "--tiles", str(tiles), "--demand", str(demand), "--json"),
            *("--policy", "random,hotspot", "--taxis", "6", "--test-taxis", "2"),
            *("--hours", "0.25", "--seeds", "3", *extra),
        ]
    )
    assert rc == 0
    doc: dict[str, Any] = json.loads(capsys.readouterr().out)
    doc.pop("elapsed_s")  # the one field that is a measured time, not a result
    return doc


def test_dask_gives_the_results_of_one_process(
    cluster: Any,
    manhattan_tiles: Path,
    manhattan_demand: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    one = _simulate(manhattan_tiles, manhattan_demand, ["--jobs", "1"], capsys)
    before = cluster.scheduler.transition_counter
    address = cluster.scheduler_address
    on_dask = _simulate(manhattan_tiles, manhattan_demand, ["--dask", address], capsys)
    assert cluster.scheduler.transition_counter > before  # the runs went through the cluster
    assert one["runs"] == 3 and set(one["policies"]) == {"random", "hotspot"}
    assert json.dumps(on_dask, sort_keys=True) == json.dumps(one, sort_keys=True)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def test_a_scheduler_that_cannot_be_reached_is_one_line_and_exit_2(
    manhattan_tiles: Path, manhattan_demand: Path
) -> None:
    require_distributed()
    out = subprocess.run(
        [
            *(sys.executable, "-m", "tools.cli", "simulate", "--tiles", str(manhattan_tiles)),
            *("--demand", str(manhattan_demand), "--policy", "random", "--seeds", "2"),
            *("--hours", "0.25", "--dask", f"tcp://127.0.0.1:{_closed_port()}"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nagashi: error: dask scheduler"), lines
    assert "unreachable" in lines[0] and out.stdout == ""


@pytest.mark.parametrize(
    ("address", "jobs", "message"),
    [
        ("nonsense://x", "1", "not tcp://HOST:PORT"),
        ("tcp://127.0.0.1:port", "1", "not tcp://HOST:PORT"),
        ("tcp://127.0.0.1:8786", "2", "--jobs and --dask"),
    ],
)
def test_a_bad_address_or_jobs_beside_dask_is_refused_before_loading(
    address: str, jobs: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tools.cli import main

    require_distributed()
    missing = str(tmp_path / "missing")  # never opened: the option is refused first
    rc = main(
        [
            *("simulate", "--tiles", missing, "--demand", missing),
            *("--jobs", jobs, "--dask", address),
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and message in err[0], err


def test_the_pipeline_step_takes_a_dask_address_but_not_beside_jobs() -> None:
    from tools.pipeline.errors import PipelineSpecError
    from tools.pipeline.step import parse_params
    from tools.pipeline.steps_sim import SimulateParams

    p = parse_params(SimulateParams, {"dask": "tcp://127.0.0.1:8786"}, "steps.simulate.params")
    assert p.dask == "tcp://127.0.0.1:8786" and p.jobs == 1
    with pytest.raises(PipelineSpecError, match="jobs and dask"):
        parse_params(SimulateParams, {"dask": "tcp://127.0.0.1:8786", "jobs": 2}, "simulate")

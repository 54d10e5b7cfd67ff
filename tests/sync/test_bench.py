"""The sync benchmark runs end to end and meets its byte goal (bytes, not timings)."""

from __future__ import annotations

import argparse

import pytest

from sync import bench_sync


@pytest.mark.slow
def test_bench_sync_one_tile_update_moves_little():
    parser = argparse.ArgumentParser()
    bench_sync.add_arguments(parser)
    out = bench_sync.run(parser.parse_args(["--records", "300", "--batch-records", "64"]))
    assert out["first_pull_status"] == "installed"
    assert out["changed_files_bytes"] > out["tiles_bytes"]  # tiles.sqlite changed
    assert out["ratio_vs_changed_plus_metadata"] < 1.2  # the goal
    assert out["update_bytes"] < out["changed_files_bytes"]  # chunks, not whole files
    assert 0 < out["update_chunks_downloaded"] < out["update_chunks_reused"]
    assert out["upload_records"] == 300 and out["upload_batches"] == 5
    assert out["upload_peak_rss_mib"] > 0


@pytest.mark.slow
def test_bench_fleet_loses_and_duplicates_nothing_on_both_back_ends(pg_cluster: object) -> None:
    """A small run of ``nagashi bench fleet`` (counts, not timings): every acknowledged record
    is stored once, on SQLite, PostgreSQL and two processes on PostgreSQL."""
    from sync import bench_fleet

    parser = argparse.ArgumentParser()
    bench_fleet.add_arguments(parser)
    url = pg_cluster.database()  # type: ignore[attr-defined]
    args = ["--cabs", "20", "--interval-s", "2", "--minutes", "0.1", "--postgres-url", url]
    out = bench_fleet.run(parser.parse_args(args))
    for backend in ("sqlite", "postgresql", "postgresql-2proc"):
        r = out[backend]
        assert r["errors"] == 0 and r["records_unacked"] == 0, r["error_kinds"]
        assert r["records_lost"] == 0 and r["records_duplicated"] == 0
        assert r["records_stored"] == r["records_acked"] > 0
        assert r["server_peak_rss_mib"] > 0

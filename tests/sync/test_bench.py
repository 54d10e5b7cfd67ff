"""The sync benchmark runs end to end and meets its byte goal (bytes, not timings)."""

from __future__ import annotations

import argparse

import pytest

from sync import bench_sync


@pytest.mark.slow
def test_bench_sync_one_tile_update_moves_little() -> None:
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

"""Sync: bytes moved by a one-tile bundle update, log upload records/s and peak RSS.

Builds road tiles from a real OSM extract (Monaco by default), a bundle v1 and a bundle v2 in
which one tile's records changed, publishes both to a fleet repository served by
``nagashi fleet serve`` in a separate process on 127.0.0.1, and pulls them into a device store:

* ``update_bytes``: response body bytes the device read for the v1 -> v2 update (TUF metadata
  plus the bundle index plus changed chunks); HTTP headers are not counted.
* ``changed_files_bytes``: the size of every file that differs between v1 and v2 (the
  whole-file alternative); ``update_metadata_bytes``: TUF metadata read during the update.
* ``ratio_vs_changed_plus_metadata`` (goal < 1.2) and ``ratio_vs_full_bundle``.
* ``renumber_*``: a further update in which that tile gains an edge and every later tile's
  ``first_edge`` shifts (what a re-import does): most pages of tiles.sqlite change.

The log upload runs in a fresh interpreter (so its peak RSS is the uploader's, not the
benchmark's): ``records`` msgpack records of about ``record_bytes`` are appended to an outbox
and drained to the server; ``upload_records_per_s`` counts append-free upload time only.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import resource
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sync._serve_process import FleetServerProcess
from tiles.fileio import real_data_dir

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OSM = real_data_dir() / "osm" / "monaco_osrm.osm.pbf"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--osm", type=Path, default=DEFAULT_OSM, help="OSM extract for tiles")
    parser.add_argument("--tile-index", type=int, default=5, help="which tile changes in v2")
    parser.add_argument("--chunk-kib", type=int, default=64, help="published chunk size")
    parser.add_argument("--records", type=int, default=20_000, help="log records to upload")
    parser.add_argument("--record-bytes", type=int, default=200, help="payload per record")
    parser.add_argument("--batch-records", type=int, default=500)
    parser.add_argument("--keep", type=Path, help="keep the work directory here")


def _counting_fetcher() -> Any:
    from sync.fetcher import HttpxFetcher

    class Counting(HttpxFetcher):
        def __init__(self) -> None:
            super().__init__()
            self.by_kind = {"metadata": 0, "targets": 0}

        def _fetch(self, url: str) -> Iterator[bytes]:
            kind = "metadata" if "/metadata/" in url else "targets"
            for piece in super()._fetch(url):
                self.by_kind[kind] += len(piece)
                yield piece

    return Counting()


def _peak_rss_bytes() -> int:
    """Peak resident set of this process image: VmHWM (ru_maxrss would also count the parent
    pages shared between fork and exec, since Linux carries maxrss across execve)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _upload_child(url: str, token: str, work: str, n: int, size: int, batch: int, q: Any) -> None:
    from sync import LogClient, LogUploader, Outbox, OutboxConfig

    import_rss = _peak_rss_bytes()
    ob = Outbox(Path(work) / "outbox.sqlite", OutboxConfig(batch_max_records=batch))
    pad = "x" * max(0, size - 40)
    step = 5000
    for start in range(0, n, step):
        ob.append_many(
            ({"i": i, "kind": "decision", "pad": pad}, 1_800_000_000.0 + i)
            for i in range(start, min(n, start + step))
        )
    client = LogClient(url, token)
    t0 = time.monotonic()
    res = LogUploader(ob, client, "bench-cab").flush()
    elapsed = time.monotonic() - t0
    client.close()
    q.put(
        {
            "sent": res.sent,
            "batches": res.batches,
            "elapsed_s": elapsed,
            "peak_rss_bytes": _peak_rss_bytes(),
            "import_rss_bytes": import_rss,
        }
    )


def _bundles(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Bundles v1, v2 (one tile's records changed) and v3 (that tile gains an edge and later
    tiles are renumbered) from one tile build."""
    from sync import BundleInputs
    from sync import build_bundle as build
    from sync._fixtures import base_manifest, change_one_tile, composed, tiles_meta, write_inputs
    from tiles import build_tiles

    tiles, _ = build_tiles(args.osm, work / "tiles")
    m = base_manifest(tiles_meta(tiles)["source_sha256"], area="bench")
    bundles = {}
    for name, changed in (("v1", None), ("v2", args.tile_index), ("v3", args.tile_index)):
        src = work / f"in-{name}"
        src.mkdir()
        shutil.copyfile(tiles, src / "tiles.sqlite")
        if changed is not None:
            change_one_tile(src / "tiles.sqlite", changed, renumber=name == "v3")
        p = write_inputs(src, src / "tiles.sqlite", m)
        inputs = BundleInputs(p["tiles"], p["demand"], p["params"], p["area"])
        bundles[name] = build(composed(m), inputs, work / "bundles")
    return bundles


def _upload(url: str, token: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """The log upload's figures, from a fresh interpreter (its own peak RSS)."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    child = ctx.Process(
        target=_upload_child,
        args=(url, token, str(work), args.records, args.record_bytes, args.batch_records, q),
    )
    child.start()
    up: dict[str, Any] = q.get(timeout=600)
    child.join(60)
    return up


@dataclass(frozen=True)
class _Pulls:
    fetchers: tuple[Any, Any, Any]  # the counting fetchers of the v1, v2 and v3 pulls
    results: tuple[Any, Any, Any]  # their PullResults
    update_s: float  # the v1 -> v2 update's wall time
    upload: dict[str, Any]  # the log upload's figures


def _pulls(
    repo: Any,
    url: str,
    token: str,
    work: Path,
    bundles: dict[str, Any],
    args: argparse.Namespace,
    now: datetime,
) -> _Pulls:
    """The device's pulls (v1, then v1 -> v2 timed, then v2 -> v3) with the bytes each read,
    and the log upload, against the server at ``url`` (v2 and v3 are published in turn)."""
    from sync import BundleStore, PullConfig, Updater

    store = BundleStore(work / "device")
    trusted = repo.trusted_root_path().read_bytes()
    f1 = _counting_fetcher()
    first = Updater(store, PullConfig(url, "bench"), trusted, fetcher=f1).pull()
    v2, v3 = bundles["v2"], bundles["v3"]
    repo.publish(v2.path, "bench", now)
    f2 = _counting_fetcher()
    t0 = time.monotonic()
    upd = Updater(store, PullConfig(url, "bench"), trusted, fetcher=f2).pull()
    update_s = time.monotonic() - t0
    assert upd.bundle_id == v2.bundle_id
    # v2 -> v3: the same tile grows by an edge and later tiles are renumbered
    repo.publish(v3.path, "bench", now)
    f3 = _counting_fetcher()
    upd3 = Updater(store, PullConfig(url, "bench"), trusted, fetcher=f3).pull()
    assert upd3.bundle_id == v3.bundle_id
    up = _upload(url, token, work, args)
    return _Pulls((f1, f2, f3), (first, upd, upd3), update_s, up)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from sync import FleetRepository, RepoConfig
    from sync.logstore import SqliteLogStorage

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="nagashi-bench-sync-"))
    work.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC).replace(microsecond=0)
    try:
        bundles = _bundles(args, work)
        v1, v2 = bundles["v1"], bundles["v2"]
        full_bytes = sum(e.size_bytes for e in v2.files.values())
        full_bytes += (v2.path / "manifest.yaml").stat().st_size
        changed_bytes = (v2.path / "manifest.yaml").stat().st_size + sum(
            e.size_bytes
            for n, e in v2.files.items()
            if n not in v1.files or v1.files[n].sha256 != e.sha256
        )
        fleet = work / "fleet"
        repo = FleetRepository(fleet, RepoConfig(chunk_bytes=args.chunk_kib * 1024))
        repo.init(now)
        repo.publish(v1.path, "bench", now)
        storage = SqliteLogStorage(fleet / "fleet.sqlite")
        token = storage.add_token("vehicle", "bench-cab", time.time())
        storage.close()
        server = FleetServerProcess(fleet, start_timeout_s=20.0)
        try:
            r = _pulls(repo, server.url, token, work, bundles, args, now)
        finally:
            server.close()
        (f1, f2, f3), (first, upd, upd3), up = r.fetchers, r.results, r.upload
        update_bytes = f2.by_kind["metadata"] + f2.by_kind["targets"]
        meta = f2.by_kind["metadata"]
        return {
            "osm": args.osm.name,
            "tiles_bytes": v2.files["tiles.sqlite"].size_bytes,
            "full_bundle_bytes": full_bytes,
            "first_pull_bytes": f1.by_kind["metadata"] + f1.by_kind["targets"],
            "changed_files_bytes": changed_bytes,
            "update_metadata_bytes": meta,
            "update_bytes": update_bytes,
            "update_chunks_downloaded": upd.chunks_downloaded,
            "update_chunks_reused": upd.chunks_reused,
            "update_s": round(r.update_s, 3),
            "ratio_vs_changed_plus_metadata": round(update_bytes / (changed_bytes + meta), 4),
            "ratio_vs_full_bundle": round(update_bytes / full_bytes, 4),
            "first_pull_status": first.status,
            "renumber_update_bytes": f3.by_kind["metadata"] + f3.by_kind["targets"],
            "renumber_chunks_downloaded": upd3.chunks_downloaded,
            "renumber_chunks_reused": upd3.chunks_reused,
            "upload_records": up["sent"],
            "upload_batches": up["batches"],
            "upload_record_bytes": args.record_bytes,
            "upload_records_per_s": round(up["sent"] / up["elapsed_s"], 1),
            "upload_peak_rss_mib": round(up["peak_rss_bytes"] / 2**20, 1),
            "upload_rss_after_imports_mib": round(up["import_rss_bytes"] / 2**20, 1),
        }
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

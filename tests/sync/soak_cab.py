"""One cab of the soak test (tests/sync/test_soak.py), run as its own process.

``python -m tests.sync.soak_cab DATA URL VEHICLE TOKEN_FILE MAX_RECORDS {run,drain}``: the real
pipeline of the agent (trip log fsynced, :class:`agent.outbox_feed.OutboxFeed`, bounded outbox,
uploader). ``run`` logs records and uploads until it is killed; ``drain`` only uploads until
the outbox is empty, then exits 0.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

from agent.outbox_feed import OutboxFeed
from agent.triplog import TripLog, TripLogConfig
from sync import LogClient, LogClientConfig, LogUploader, Outbox, OutboxConfig, RetryConfig
from sync.errors import SyncError


def main(argv: list[str]) -> int:
    data, url, vehicle, token_file, max_records, mode = argv
    token = Path(token_file).read_text().strip()
    outbox = Outbox(Path(data) / "outbox.sqlite", OutboxConfig(max_records=int(max_records)))
    feed = OutboxFeed(outbox, Path(data) / "trips")
    triplog = TripLog(TripLogConfig(Path(data) / "trips", max_file_bytes=4096), sink=feed)
    feed.start(triplog.next_seq)
    client = LogClient(url, token, LogClientConfig(connect_timeout_s=1.0, read_timeout_s=2.0))
    uploader = LogUploader(
        outbox, client, vehicle, RetryConfig(base_delay_s=0.05, max_delay_s=0.3, max_attempts=4)
    )
    if mode == "drain":
        while outbox.stats()["records"]:
            try:
                uploader.flush()
            except SyncError:
                time.sleep(0.1)
        return 0
    n = 0
    while True:
        for _ in range(3):
            triplog.append({"kind": "meter", "time_s": time.time(), "cab": vehicle, "n": n})
            n += 1
        with contextlib.suppress(SyncError):
            uploader.flush()
        time.sleep(0.02)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

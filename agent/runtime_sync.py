"""The runtime's work with the fleet server beside the loop, which :class:`agent.runtime.Agent`
inherits from :class:`BackgroundSync`: the sync clients' setup, bundle pulls and log uploads in
the background thread (each step retried after an exponential backoff, never raising), the
live layer's setup (:class:`agent.live.LiveLink`), the status page's ``sync`` part and the
final log flush at shutdown; and :func:`start_bundle`, which can pull the active bundle again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agent.bundle import LoadedBundle, load_start_bundle
from agent.errors import AgentError
from agent.runtime_config import AgentConfig
from sync import Outbox, SyncError
from sync.backoff import backoff_delay_s

if TYPE_CHECKING:  # the sync client (tuf, httpx) is imported only when sync is configured
    from agent.clock import Clock
    from agent.live import LiveLink
    from agent.runtime import RunSummary
    from sync import BundleStore, LogUploader, Updater

__all__ = ["BackgroundSync", "start_bundle"]

log = logging.getLogger("agent.runtime")  # the runtime's log lines keep their logger's name


def start_bundle(config: AgentConfig) -> LoadedBundle:
    """The bundle the agent starts on (:func:`agent.bundle.load_start_bundle`): the active one,
    else the previous good one in the store, else the active one pulled again from the fleet
    (verified through TUF) when bundle sync is configured."""
    s = config.sync
    repair: Callable[[], object] | None = None
    if s is not None and s.area and s.trusted_root is not None:
        area, root_path = s.area, s.trusted_root

        def repair() -> object:
            from sync import BundleStore, FetchConfig, PullConfig, Updater

            u = Updater(
                BundleStore(config.bundle_dir),
                PullConfig(s.server_url, area, fetch=FetchConfig(ca_file=s.ca_file)),
                root_path.read_bytes(),
            )
            try:
                return u.pull(verify=True)
            finally:
                u.close()

    return load_start_bundle(config.bundle_dir, timezone=config.timezone, repair=repair)


class BackgroundSync:
    """The fleet-server half of :class:`agent.runtime.Agent` (its base class: the attributes
    below are the agent's, set in its ``__init__``)."""

    config: AgentConfig
    clock: Clock
    bundle: LoadedBundle
    outbox: Outbox
    summary: RunSummary
    _stop: threading.Event
    _reload: threading.Event
    _sync_status: dict[str, Any]
    _outbox_closed: bool
    _outbox_stats: dict[str, int]
    _uploader: LogUploader | None
    _updater: Updater | None
    _live: LiveLink | None
    # checked at start-up, for the clients the sync thread makes (see _setup_sync)
    _trusted_root: bytes | None = None
    _sync_store: BundleStore | None = None
    _sync_clients_lock: threading.Lock

    def _setup_sync(self) -> None:
        """What bundle sync and the log upload need, checked at start-up (an unreadable trusted
        root, bundle store or CA file is the operator's to fix): the clients themselves, and
        the TUF client, httpx and securesystemslib they import, are made by
        :meth:`_sync_clients` in the sync thread, after the first instruction (issue 20)."""
        s = self.config.sync
        if s is None:
            return
        if s.ca_file:
            from sync._tls import client_verify

            try:
                client_verify(s.ca_file)
            except SyncError as e:
                raise AgentError(f"sync cannot start: {e}") from e
        if s.area and s.trusted_root is not None:
            from sync import BundleStore  # bundle sync only: not for a bundle directory

            try:
                self._trusted_root = s.trusted_root.read_bytes()
                self._sync_store = BundleStore(self.config.bundle_dir)
            except (OSError, SyncError) as e:
                raise AgentError(f"bundle sync cannot start: {e}") from e

    def _sync_clients(self) -> None:
        """The log uploader and, with bundle sync, the updater (once; the sync thread's first
        step, or the final flush's when the thread never ran)."""
        s = self.config.sync
        assert s is not None
        with self._sync_clients_lock:
            if self._uploader is not None:
                return
            from sync import (
                FetchConfig,
                LogClient,
                LogClientConfig,
                LogUploader,
                PullConfig,
                RetryConfig,
                Updater,
            )

            if self._sync_store is not None and self._trusted_root is not None:
                assert s.area is not None  # a store is opened for bundle sync only
                config = PullConfig(
                    s.server_url,
                    s.area,
                    fetch=FetchConfig(ca_file=s.ca_file),
                    vehicle_id=self.config.vehicle_id,
                    cohort=s.cohort,
                )
                self._updater = Updater(self._sync_store, config, self._trusted_root)
            self._uploader = LogUploader(
                self.outbox,
                LogClient(s.server_url, s.token, LogClientConfig(ca_file=s.ca_file)),
                self.config.vehicle_id,
                RetryConfig(max_attempts=3),
                sleep=self._backoff_sleep,
            )

    def _setup_live(self) -> None:
        """The heartbeat and snapshot threads (agent.live), when a fleet server is configured:
        the area is the bundle sync's, else the bundle's own; snapshots need the fleet's TUF
        metadata in the bundle store (bundle sync on), heartbeats only the token."""
        s = self.config.sync
        if s is None or not s.live:
            return
        area = s.area or self.bundle.manifest.get("area")
        if not isinstance(area, str) or not area:
            log.warning("live: the bundle names no area; no heartbeats, no snapshots")
            return
        from agent.live import LiveLink

        tuf_dir = self._sync_store.tuf_dir if self._sync_store is not None else None
        try:
            self._live = LiveLink(
                server_url=s.server_url,
                token=s.token,
                area=area,
                network_sha256=self.bundle.demand.network_sha256,
                data_dir=self.config.data_dir,
                tuf_dir=tuf_dir,
                clock=self.clock.now,
                ca_file=s.ca_file,
                heartbeat_every_s=s.heartbeat_interval_s,
                snapshot_every_s=s.snapshot_interval_s,
                keep_snapshots=s.keep_snapshots,
            )
        except SyncError as e:  # a network id that is no sha256, a bad CA file: guidance
            # and the log upload go on without the live layer
            self._sync_status["live_error"] = str(e)
            log.error("live layer cannot start: %s", e)

    def _backoff_sleep(self, seconds: float) -> None:
        self._stop.wait(seconds)

    def sync_status(self) -> dict[str, Any]:
        out = dict(self._sync_status)
        out["outbox"] = self._outbox_stats if self._outbox_closed else self.outbox.stats()
        if self._live is not None:
            out["live"] = self._live.status()
        return out

    # ------------------------------------------------------------------ background sync
    def _sync_step(self, name: str, step: Callable[[], None], interval_s: float) -> float:
        """Run one sync step (``pull`` or ``upload``); the seconds until the next. Never raises:
        whatever goes wrong is logged and counted, and the step is retried after an
        exponential backoff (the interval, doubled per consecutive failure, capped)."""
        s = self.config.sync
        assert s is not None
        st = self._sync_status
        try:
            step()
        except SyncError as e:  # offline, expired, rejected: keep the bundle and the records
            st[f"{name}_error"] = str(e)
            log.info("%s: %s (keeping %s)", name, e, self.bundle.bundle_id[:12])
        except Exception as e:  # a bug, or data no check foresaw: the thread must carry on
            st[f"{name}_error"] = f"{type(e).__name__}: {e}"
            st["unexpected_errors"] = st.get("unexpected_errors", 0) + 1
            log.exception("sync %s failed unexpectedly; the sync thread carries on", name)
        else:
            st[f"{name}_error"] = ""
            st[f"{name}_consecutive_failures"] = 0
            return interval_s
        st[f"{name}_failures"] = st.get(f"{name}_failures", 0) + 1
        n = int(st.get(f"{name}_consecutive_failures", 0)) + 1
        st[f"{name}_consecutive_failures"] = n
        delay = backoff_delay_s(n, interval_s, max(interval_s, s.retry_max_s))
        st[f"{name}_retry_in_s"] = delay
        return delay

    def _pull_step(self) -> None:
        from sync import pull_reporting_health

        assert self._updater is not None
        reporter = self._uploader.client if self._uploader is not None else None
        res = pull_reporting_health(self._updater, reporter, self.config.vehicle_id)
        self._sync_status["last_pull"] = {"status": res.status, "bundle": res.bundle_id}
        # a new bundle, the active one repaired, or the agent started on an older one
        if res.status != "up_to_date" or res.bundle_id != self.bundle.bundle_id:
            self._reload.set()

    def _upload_step(self) -> None:
        assert self._uploader is not None
        r = self._uploader.flush()
        self._sync_status["last_upload"] = {"sent": r.sent, "batches": r.batches}

    def _sync_loop(self) -> None:
        s = self.config.sync
        assert s is not None
        try:
            self._sync_clients()
        except Exception as e:  # checked at start-up, so a bug: guidance goes on without sync
            self._sync_status["clients_error"] = f"{type(e).__name__}: {e}"
            self._sync_status["unexpected_errors"] += 1
            log.exception("sync clients cannot be made: no bundle pulls, no log upload")
            return
        next_pull = 0.0
        next_upload = 0.0
        while not self._stop.is_set():
            now = self.clock.monotonic()
            if self._updater is not None and now >= next_pull:
                next_pull = now + self._sync_step("pull", self._pull_step, s.pull_interval_s)
            if self._uploader is not None and now >= next_upload:
                next_upload = now + self._sync_step(
                    "upload", self._upload_step, s.upload_interval_s
                )
            self._stop.wait(1.0)

    def _final_flush(self) -> None:
        assert self.config.sync is not None
        try:
            self._sync_clients()  # made already, unless the sync thread never ran
        except Exception as e:  # the sync thread logged it: the records stay in the outbox
            self.summary.flush_error = f"{type(e).__name__}: {e}"
            return
        assert self._uploader is not None
        from sync import LogUploader, RetryConfig

        uploader = LogUploader(
            self.outbox,
            self._uploader.client,
            self.config.vehicle_id,
            RetryConfig(
                base_delay_s=0.5,
                max_delay_s=2.0,
                max_attempts=self.config.sync.shutdown_flush_attempts,
            ),
        )
        try:
            r = uploader.flush()
            log.info("shutdown: %d log records uploaded", r.sent)
        except SyncError as e:
            self.summary.flush_error = str(e)
            log.warning("shutdown: log upload incomplete (%s); records stay in the outbox", e)
        finally:
            self._uploader.client.close()

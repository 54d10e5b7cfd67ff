"""The in-cab loop: GPS fixes in, instructions out, every tick logged; sync in the background.

``Agent.run()`` reads fixes from a :class:`~agent.gps.GpsSource`; it plans on the first fix, then
every ``plan_interval_s`` of the source's clock, and sooner (but not more often than every
``min_replan_interval_s``) when the cab leaves the recommended route by more than
``off_route_m``. Each tick is :func:`agent.decide.decide`, logged durably (agent.triplog, then the
sync outbox through :class:`OutboxFeed`, which on start-up re-enqueues the trip log's tail the
outbox never got) and published to the HTTP API. Between ticks only the cab's position moves on the
page. A background thread pulls bundles (sync.Updater; a new bundle is swapped in at the next
tick) and uploads the outbox (sync.LogUploader); two more (:class:`agent.live.LiveLink`) send
heartbeats and fetch the fleet's live snapshot, which each tick plans with (``TickInputs.live``)
without waiting for the network. They start once the first instruction is published (or the
receiver is silent), so that the first tick does not share the interpreter with them.
:meth:`Agent.stop` (SIGTERM) ends the loop; the run then writes its ``stop`` record, closes the
trip log and flushes the outbox to the server.

The loop is here; the fleet-server side (sync clients, the sync thread, the live layer's
setup, the final flush, :func:`start_bundle`) is in :mod:`agent.runtime_sync`, the settings
(:class:`AgentConfig`, :class:`SyncSettings`) in :mod:`agent.runtime_config`; both are
re-exported here.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agent.api.state import AgentState
from agent.bundle import LoadedBundle, load_bundle
from agent.clock import Clock
from agent.decide import TickInputs, decide
from agent.errors import AgentError, BundleLoadError
from agent.gps import Fix, GpsSource
from agent.instruction import Instruction, advance
from agent.outbox_feed import OutboxFeed
from agent.planner.readout import spread_salt_of
from agent.planner.workspace import release_workspace
from agent.runtime_config import AgentConfig, SyncSettings
from agent.runtime_sync import BackgroundSync, start_bundle
from agent.triplog import TripLog, TripLogConfig
from agent.version import code_version
from safety import ReversalCounter, SafetyGate, maneuver_key
from sync import Outbox, SyncError
from tiles.geo import project_onto_line

__all__ = [
    "RETIRED_BUNDLE_GRACE_S",
    "Agent",
    "AgentConfig",
    "RunSummary",
    "SyncSettings",
    "distance_to_line_m",
    "start_bundle",
]

log = logging.getLogger(__name__)

RETIRED_BUNDLE_GRACE_S = 30.0  # a replaced bundle's tile database stays open this long


@dataclass
class RunSummary:
    run_id: str
    fixes: int = 0
    ticks: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    fallbacks_by_reason: Counter[str] = field(default_factory=Counter)
    first_instruction_s: float | None = None  # monotonic seconds from run() to first publish
    outbox_remaining: int | None = None
    flush_error: str = ""
    #: A->B->A changes of the next manoeuvre within 2 minutes (safety.ReversalCounter)
    reversals: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "fixes": self.fixes,
            "ticks": self.ticks,
            "by_kind": dict(self.by_kind),
            "fallbacks_by_reason": dict(sorted(self.fallbacks_by_reason.items())),
            "first_instruction_s": self.first_instruction_s,
            "outbox_remaining": self.outbox_remaining,
            "flush_error": self.flush_error,
            "reversals": self.reversals,
        }


def distance_to_line_m(lon: float, lat: float, coords: tuple[tuple[float, float], ...]) -> float:
    """Distance (metres) from a point to a polyline; inf for an empty line."""
    return project_onto_line(coords, lon, lat)[1]


class Agent(BackgroundSync):
    """The loop (module docstring); the fleet-server side is :class:`BackgroundSync`'s."""

    def __init__(
        self,
        config: AgentConfig,
        source: GpsSource,
        clock: Clock,
        state: AgentState | None = None,
        *,
        on_instruction: Callable[[Instruction], None] | None = None,
        bundle: LoadedBundle | None = None,
    ) -> None:
        self.config = config
        self.source = source
        self.clock = clock
        #: the route read-out's spread without a live snapshot: this cab's own (the vehicle's)
        self._spread_salt = spread_salt_of(config.vehicle_id)
        self.state = state or AgentState(locale=config.locale)
        self.state.locale = config.locale
        self.on_instruction = on_instruction
        self.run_id = uuid.uuid4().hex[:16]
        self.summary = RunSummary(self.run_id)
        self._stop = threading.Event()
        self._demand_logged: set[str] = set()
        self._outbox_closed = False
        self._outbox_stats: dict[str, int] = {}
        self._reload = threading.Event()
        # route stability: the links this cab passed vacant (edge id -> time_s of the pass),
        # the taximeter, the countdown shown between ticks, the manoeuvre reversals
        self._passes: dict[int, float] = {}
        self._occupied = False
        self._countdown: list[list[float]] = []
        self._reversals = ReversalCounter()
        # bundles replaced by a newer one: their tile databases are closed after a grace period
        # (an API request may still be reading the old store), or at shutdown
        self._retired: list[tuple[LoadedBundle, threading.Timer]] = []
        self._sync_status: dict[str, Any] = {
            "enabled": config.sync is not None,
            "unexpected_errors": 0,  # exceptions outside SyncError caught by the sync thread
        }
        self.bundle = bundle or start_bundle(config)
        self.gate = SafetyGate(self.bundle.safety, area=self.bundle.area, locale=config.locale)
        config.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.outbox: Outbox = Outbox(config.data_dir / "outbox.sqlite")
        except SyncError as e:
            raise AgentError(f"cannot open the log outbox: {e}") from e
        trips = config.data_dir / "trips"
        self.feed = OutboxFeed(self.outbox, trips)
        self.triplog = TripLog(
            TripLogConfig(trips, max_file_bytes=config.log_max_file_bytes), sink=self.feed
        )
        try:  # what reached the trip log but not the outbox (a crash between the two)
            n = self.feed.start(self.triplog.next_seq)
            if n:
                log.warning("start-up: %d trip-log record(s) enqueued for upload again", n)
        except (SyncError, AgentError) as e:  # the next record's catch-up tries again
            log.error("start-up: trip log not reconciled with the outbox: %s", e)
        self._uploader = None  # the sync clients and the live link (see BackgroundSync)
        self._updater = None
        self._sync_clients_lock = threading.Lock()
        self._sync_thread: threading.Thread | None = None
        self._background_started = False
        self._live = None
        self._setup_sync()
        self._setup_live()
        self._publish_bundle()
        self.state.status_providers["trip_log"] = self.triplog.status
        self.state.status_providers["sync"] = self.sync_status
        self.state.status_providers["safety"] = self.gate.stats
        self.state.on_meter = self.meter

    # ------------------------------------------------------------------ wiring
    def _publish_bundle(self) -> None:
        with self.state.lock:
            self.state.bundle = self.bundle.summary()
            self.state.store = self.bundle.store

    def meter(self, occupied: bool) -> None:
        """A taximeter change (from the API thread): logged for the trial reports; an occupied
        cab's passes do not drain the curb of hails (it cannot take them)."""
        self._occupied = bool(occupied)
        fix = self._last_fix
        if self._live is not None:  # pickups and drop-offs go with the next heartbeats
            self._live.meter(
                self._occupied, None if fix is None else fix.lon, None if fix is None else fix.lat
            )
        self.triplog.append(
            {
                "kind": "meter",
                "time_s": self.source.now(),
                "run_id": self.run_id,
                "occupied": occupied,
                "lon": None if fix is None else fix.lon,
                "lat": None if fix is None else fix.lat,
            }
        )

    # ------------------------------------------------------------------ the loop
    _last_fix: Fix | None = None

    def stop(self) -> None:
        """Ask the loop to end (signal-safe: sets flags only)."""
        self._stop.set()
        self.clock.stop()

    def run(self) -> RunSummary:
        t_start = self.clock.monotonic()
        self.triplog.append(
            {
                "kind": "start",
                "time_s": self.source.now(),
                "run_id": self.run_id,
                "vehicle_id": self.config.vehicle_id,
                "code": code_version(),
                "bundle": {"id": self.bundle.bundle_id, "manifest": self.bundle.manifest},
                "gps": self.source.description,
                "config": {
                    "plan_interval_s": self.config.plan_interval_s,
                    "min_replan_interval_s": self.config.min_replan_interval_s,
                    "off_route_m": self.config.off_route_m,
                    "locale": self.config.locale,
                },
            }
        )
        last_tick: float | None = None
        prev: Fix | None = None
        moving: Fix | None = None
        track: list[list[float | None]] = []
        try:
            for fix in self.source.fixes():
                if self._stop.is_set():
                    break
                if fix is None:  # the receiver is silent: judge the last fix as it ages
                    self._start_background()
                    now = self.source.now()
                    last = self._last_fix
                    if (
                        last is not None
                        and last_tick is not None
                        and (now - last_tick >= self.config.plan_interval_s)
                    ):
                        self._tick(self._inputs(now, last, prev, "no_fix", moving), track)
                        track = []
                        last_tick = now
                    continue
                self.summary.fixes += 1
                self._last_fix = fix
                if self._is_moving(fix):
                    moving = fix
                track.append([fix.time_s, fix.lon, fix.lat, fix.speed_mps])
                now = self.source.now()
                trigger = self._due(now, last_tick, fix)
                if trigger is None:
                    self._move_cab(fix)
                else:
                    if self._reload.is_set():
                        self._swap_bundle(now)
                    self._tick(self._inputs(now, fix, prev, trigger, moving), track)
                    track = []
                    last_tick = now
                    if self.summary.first_instruction_s is None:
                        self.summary.first_instruction_s = self.clock.monotonic() - t_start
                        self._start_background()
                prev = fix
        finally:
            self._shutdown(track)
        return self.summary

    def _start_background(self) -> None:
        """Start the sync thread and the live layer's threads, once: after the first tick has
        published its instruction (or when the receiver is silent before any), so that the
        first instruction does not wait for a bundle pull or a snapshot check (issue 20)."""
        if self._background_started:
            return
        self._background_started = True
        if self.config.sync is not None:
            self._sync_thread = threading.Thread(target=self._sync_loop, name="agent-sync")
            self._sync_thread.daemon = True
            self._sync_thread.start()
        if self._live is not None:
            self._live.start()

    def _inputs(
        self, now: float, fix: Fix | None, prev: Fix | None, trigger: str, moving: Fix | None
    ) -> TickInputs:
        """A tick's inputs: the fixes, and the cab's recent vacant passes and shown route."""
        memory_s = self.bundle.planner.patience_s  # W <= patience: older passes change nothing
        for e in [e for e, t in self._passes.items() if now - t > memory_s]:
            del self._passes[e]
        ins, _, _, _ = self.state.snapshot()
        return TickInputs(
            now,
            fix,
            prev,
            self.config.locale,
            trigger,
            moving,
            last_pass_age_s=tuple((e, max(now - t, 0.0)) for e, t in sorted(self._passes.items())),
            previous_route=tuple(ins.route_edges) if ins.kind == "route" else (),
            live=None if self._live is None else self._live.tick_input(self.clock.now()),
            spread_salt=self._spread_salt,
        )

    def _note_passes(self, previous: Instruction, result: Any, now: float) -> None:
        """The links this tick shows the cab drove vacant: its matched link and, when it is
        still on the route shown before, the links of that route it drove since."""
        m = result.match
        if m is None or self._occupied:
            return
        here = int(m.best.edge_id)
        shown = tuple(previous.route_edges) if previous.kind == "route" else ()
        if here in shown:
            for e in shown[: shown.index(here)]:
                self._passes[int(e)] = now
        self._passes[here] = now

    def _is_moving(self, fix: Fix) -> bool:
        h, v = fix.heading_deg, fix.speed_mps
        return (
            h is not None
            and v is not None
            and math.isfinite(h)
            and v >= self.bundle.safety.gps.min_speed_for_heading_mps
        )

    def _due(self, now: float, last_tick: float | None, fix: Fix) -> str | None:
        if last_tick is None:
            return "first"
        elapsed = now - last_tick
        if elapsed >= self.config.plan_interval_s:
            return "interval"
        if elapsed < self.config.min_replan_interval_s:
            return None
        ins, _, _, _ = self.state.snapshot()
        if ins.kind == "route" and (
            distance_to_line_m(fix.lon, fix.lat, ins.geometry) > self.config.off_route_m
        ):
            return "off_route"
        return None

    def _move_cab(self, fix: Fix) -> None:
        ins, _, _, _ = self.state.snapshot()
        if ins.kind == "waiting":
            return
        heading = fix.heading_deg if fix.heading_deg is not None else ins.heading_deg
        moved = advance(ins, fix.lon, fix.lat, heading)
        if moved.kind == "route" and moved.maneuver is not None:  # logged for report slo
            self._countdown.append([fix.time_s, fix.lon, fix.lat, moved.maneuver.distance_m])
        self.state.publish(moved, tick=False)

    def _tick(self, inputs: TickInputs, track: list[list[float | None]]) -> None:
        previous, _, _, _ = self.state.snapshot()
        result = decide(self.bundle, inputs, self.gate)
        self._note_passes(previous, result, inputs.now_s)
        if self._live is not None:
            from agent.live import position_of

            self._live.note(position_of(result, self.clock.now()))
        record = result.to_record(self.bundle)
        record["run_id"] = self.run_id
        record["vehicle_id"] = self.config.vehicle_id
        record["track"] = track
        record["countdown"] = self._countdown  # [time_s, lon, lat, metres shown] since the last
        self._countdown = []
        # the demand of a 30-min slot repeats tick after tick: each log file keeps it once
        digest = record.get("demand_sha256")
        if self.triplog.will_rotate():
            self._demand_logged.clear()
        if digest is not None:
            if digest in self._demand_logged:
                record["demand"] = None
            self._demand_logged.add(digest)
        seq = self.triplog.append(record)
        ins = dataclasses.replace(result.instruction, tick_seq=seq)
        self.state.publish(ins)
        self.summary.ticks += 1
        self.summary.by_kind[ins.kind] += 1
        if ins.kind == "fallback":
            self.summary.fallbacks_by_reason.update(ins.reason_codes)
        if ins.kind == "route" and self._reversals.add(inputs.now_s, maneuver_key(ins.to_json())):
            self.summary.reversals += 1
        if self.on_instruction is not None:
            self.on_instruction(ins)

    def _swap_bundle(self, now: float) -> None:
        self._reload.clear()
        try:
            new = load_bundle(self.config.bundle_dir, timezone=self.config.timezone, verify=True)
        except BundleLoadError as e:
            log.error("new bundle does not load (%s); keeping %s", e, self.bundle.bundle_id[:12])
            return
        old = self.bundle
        self.bundle = new
        self.gate = SafetyGate(new.safety, area=new.area, locale=self.config.locale)
        self.state.status_providers["safety"] = self.gate.stats
        self._publish_bundle()
        if self._live is not None:
            try:
                self._live.set_network(new.demand.network_sha256)
            except SyncError as e:  # not a sha256: heartbeats keep the old tag, refused later
                log.error("live: new bundle's road network: %s", e)
        self.triplog.append(
            {
                "kind": "bundle",
                "time_s": now,
                "run_id": self.run_id,
                "old": old.bundle_id,
                "new": new.bundle_id,
            }
        )
        log.info("bundle %s -> %s", old.bundle_id[:12], new.bundle_id[:12])
        self._retire(old)
        release_workspace()  # the planner's kept buffers were sized for the old network

    def _retire(self, old: LoadedBundle) -> None:
        """Close ``old``'s tile database once no request can still be using it."""
        if old is self.bundle:
            return
        timer = threading.Timer(RETIRED_BUNDLE_GRACE_S, old.close)
        timer.daemon = True
        self._retired.append((old, timer))
        timer.start()

    def _close_retired(self) -> None:
        for old, timer in self._retired:
            timer.cancel()
            timer.join()
            old.close()
        self._retired.clear()

    def _shutdown(self, track: list[list[float | None]]) -> None:
        self._stop.set()
        self.source.close()
        try:
            self.triplog.append(
                {
                    "kind": "stop",
                    "time_s": self.source.now(),
                    "run_id": self.run_id,
                    "summary": self.summary.to_json(),
                    "track": track,  # the fixes after the last tick
                    "countdown": self._countdown,
                }
            )
        finally:
            self.triplog.close()
        if self._sync_thread is not None:
            self._sync_thread.join(timeout=30.0)
        if self._live is not None:
            self._live.close()
        if self.config.sync is not None:
            self._final_flush()
        self._outbox_stats = self.outbox.stats()
        self.summary.outbox_remaining = self._outbox_stats.get("records")
        self._outbox_closed = True
        self.outbox.close()
        self._close_retired()

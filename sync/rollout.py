"""Staged rollouts on the fleet's publishing machine (``nagashi fleet rollout …``).

A rollout sends a candidate bundle to a growing share of an area's cabs (``--stages
5%,25%,100%``), or of a named cohort (the trial cabs), while the others keep the area's
published bundle. Each stage is signed by the targets key as a rollout document and the
candidate's index (:mod:`sync.cohorts`: what the cab checks, and why the network cannot move it).

Cabs report their health verdict on each bundle they try (``POST /v1/health``, kept in the log
storage). :meth:`Rollouts.evaluate` applies the rules to the current stage:

* **halt** when the failed share of the stage passes ``max_failure_fraction``: the rollout
  documents are withdrawn (new targets), so the stage's cabs go back to the published bundle
  (those whose health check failed have rolled back already, on the cab);
* **promote** when at least ``min_healthy_fraction`` of the stage reported healthy and the stage
  has run ``min_stage_s``; past the last stage the candidate becomes the area's published
  bundle (a whole-area rollout) or stays the cohort's bundle (a cohort rollout);
* else wait.

For a whole-area rollout the stage's members are exact: the registered vehicles (vehicle
tokens) under the stage's threshold. A cohort's members are known to the cabs only (their local
configuration), so its stage is a hash share of the id space and its counts are the cabs that
reported.

**Where the state lives.** ``ROOT/rollouts.json`` is what the targets role signed (the
repository re-signs from it at every publish and timestamp). Every command that changes a
rollout runs under a lock (:class:`RolloutState`): with SQLite, ``ROOT/.rollout.lock``
(commands on this machine); with PostgreSQL (``--database``), a transaction-level advisory
lock on the database, which also keeps the state in the table ``rollout_state`` (one row per
rollout), so commands run on several machines (two ``rollout evaluate`` crons) take turns and
the state is backed up with the database. Should the table and the signed file differ (a
crash between signing and the commit, or a command run without ``--database``), the signed
file is what the cabs see: it is taken, and written back at the next command.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import logging
import math
import secrets
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, Protocol

from sync.cohorts import ALL, MAX_HASH, check_cohort, stage_hash, threshold_for
from sync.errors import SyncDataError
from sync.logstore import LogStorage
from sync.repository import FleetRepository

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RolloutRules:
    max_failure_fraction: float = 0.05  # halt when more of the stage failed
    min_healthy_fraction: float = 0.95  # promote when this much of the stage is healthy...
    min_stage_s: float = 3600.0  # ...and the stage has run this long


def parse_stages(text: str) -> list[float]:
    """``5%,25%,100%`` -> [5.0, 25.0, 100.0]: increasing, ending at 100."""
    try:
        stages = [float(p.strip().removesuffix("%")) for p in text.split(",") if p.strip()]
    except ValueError as e:
        raise SyncDataError(f"stages: expected e.g. 5%,25%,100%, got {text!r}") from e
    if (
        not stages
        or stages[-1] != 100
        or any(not (0 < s <= 100) or not math.isfinite(s) for s in stages)
        or any(b <= a for a, b in itertools.pairwise(stages))
    ):
        raise SyncDataError(f"stages must increase within (0, 100] and end at 100%, got {text!r}")
    return stages


def _key(area: str, cohort: str | None) -> str:
    return f"{area}/{cohort or ALL}"


class RolloutState(Protocol):
    """Where the rollout state is kept, and the lock that serialises the commands changing it.
    ``signed`` reads what the targets role signed (``FleetRepository.rollouts``)."""

    def locked(
        self, signed: Callable[[], dict[str, Any]]
    ) -> AbstractContextManager[dict[str, Any]]:
        """The state, under the lock, to change in place (and sign); kept when the block ends
        without an error."""
        ...

    def load(self, signed: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The state (no lock)."""
        ...


class FileRolloutState:
    """SQLite fleets: the state is the signed ``ROOT/rollouts.json``; the lock is
    ``ROOT/.rollout.lock`` (this machine's commands take turns)."""

    def __init__(self, repo: FleetRepository) -> None:
        self.repo = repo

    @contextlib.contextmanager
    def locked(self, signed: Callable[[], dict[str, Any]]) -> Iterator[dict[str, Any]]:
        with open(self.repo.root / ".rollout.lock", "a+") as fh:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                yield signed()
            finally:
                fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    def load(self, signed: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        return signed()


def rollout_state(repo: FleetRepository, storage: LogStorage) -> RolloutState:
    """The log storage's rollout state when it keeps one (PostgreSQL), else the file's."""
    make = getattr(storage, "rollout_state", None)
    if callable(make):
        state: RolloutState = make()
        return state
    return FileRolloutState(repo)


class Rollouts:
    """The rollouts of one fleet: state in :class:`RolloutState` (see the module docstring),
    signed through ``repo``, health and the vehicle registry in ``storage``."""

    def __init__(self, repo: FleetRepository, storage: LogStorage) -> None:
        self.repo = repo
        self.storage = storage
        self.state = rollout_state(repo, storage)

    def _locked(self) -> AbstractContextManager[dict[str, Any]]:
        return self.state.locked(self.repo.rollouts)

    @staticmethod
    def _get(rollouts: dict[str, Any], area: str, cohort: str | None) -> dict[str, Any]:
        r = rollouts.get(_key(area, cohort))
        if r is None:
            raise SyncDataError(f"no rollout for {_key(area, cohort)}")
        assert isinstance(r, dict)  # what start() stores
        return r

    def _threshold(self, r: dict[str, Any]) -> int:
        percent = float(r["stages"][r["stage"]])
        if r.get("cohort"):  # members unknown here: a share of the id space
            return MAX_HASH if percent >= 100 else int(MAX_HASH * percent / 100.0)
        return threshold_for(r["salt"], self.storage.vehicles(), percent)

    def start(
        self,
        bundle_dir: str,
        area: str,
        stages: list[float],
        now: datetime,
        *,
        cohort: str | None = None,
        rules: RolloutRules | None = None,
    ) -> dict[str, Any]:
        if cohort is not None:
            try:
                check_cohort(cohort)
            except ValueError as e:
                raise SyncDataError(str(e)) from e
        with self._locked() as rollouts:
            r = self._start(rollouts, bundle_dir, area, stages, now, cohort, rules)
        return self.describe(r, now.timestamp())

    def _start(
        self,
        rollouts: dict[str, Any],
        bundle_dir: str,
        area: str,
        stages: list[float],
        now: datetime,
        cohort: str | None,
        rules: RolloutRules | None,
    ) -> dict[str, Any]:
        old = rollouts.get(_key(area, cohort))
        if old is not None and old["state"] == "running" and old["stage"] < len(old["stages"]) - 1:
            raise SyncDataError(
                f"a rollout of {old['bundle_id'][:12]} to {_key(area, cohort)} is running "
                "(promote or halt it first)"
            )
        index = self.repo.stage_candidate(bundle_dir, area)
        published = self.repo.published().get(area)
        if published is not None and published["bundle_id"] == index["bundle_id"]:
            raise SyncDataError(f"bundle {index['bundle_id'][:12]} is already published")
        t = now.timestamp()
        r: dict[str, Any] = {
            "area": area,
            "cohort": cohort,
            "bundle_id": index["bundle_id"],
            "index": index,
            "stages": stages,
            "stage": 0,
            "state": "running",
            "salt": secrets.token_hex(8),
            "rules": asdict(rules or RolloutRules()),
            "started_s": t,
            "stage_started_s": t,
            "history": [{"t_s": t, "event": f"started at {stages[0]:g}%"}],
        }
        r["threshold"] = self._threshold(r)
        rollouts[_key(area, cohort)] = r
        self.repo.sign_rollouts(rollouts, now)
        return r

    def members(self, r: dict[str, Any]) -> list[str] | None:
        """The stage's registered vehicles (None for a cohort: the cabs know, not the server)."""
        if r.get("cohort"):
            return None
        return [v for v in self.storage.vehicles() if stage_hash(r["salt"], v) <= r["threshold"]]

    def describe(self, r: dict[str, Any], now_s: float) -> dict[str, Any]:
        """The rollout's state, its stage's health and what the rules say (``decision``)."""
        reports = self.storage.health_reports(r["bundle_id"])
        members = self.members(r)
        counted = reports if members is None else {v: reports[v] for v in members if v in reports}
        failed = sorted(v for v, (ok, _) in counted.items() if not ok)
        healthy = sorted(v for v, (ok, _) in counted.items() if ok)
        n = len(counted) if members is None else len(members)
        rules = RolloutRules(**r["rules"])
        decision = "none"
        if r["state"] == "running":
            last = r["stage"] == len(r["stages"]) - 1
            if n and len(failed) / n > rules.max_failure_fraction:
                decision = "halt"
            elif last and r.get("cohort"):
                decision = "none"  # the cohort runs it
            elif (
                n
                and len(healthy) / n >= rules.min_healthy_fraction
                and now_s - r["stage_started_s"] >= rules.min_stage_s
            ):
                decision = "promote"
            else:
                decision = "wait"
        return {
            "area": r["area"],
            "cohort": r.get("cohort"),
            "bundle_id": r["bundle_id"],
            "state": r["state"],
            "stage": r["stage"] + 1,
            "stages": [f"{s:g}%" for s in r["stages"]],
            "percent": r["stages"][r["stage"]],
            "members": n,
            "healthy": len(healthy),
            "failed": failed,
            "unreported": None if members is None else n - len(counted),
            "decision": decision,
            "history": r["history"],
        }

    def status(self, now_s: float) -> list[dict[str, Any]]:
        rollouts = self.state.load(self.repo.rollouts)
        return [self.describe(r, now_s) for _, r in sorted(rollouts.items())]

    def promote(
        self, area: str, cohort: str | None, now: datetime, *, force: bool = False
    ) -> dict[str, Any]:
        with self._locked() as rollouts:
            return self._promote(rollouts, area, cohort, now, force=force)

    def _promote(
        self,
        rollouts: dict[str, Any],
        area: str,
        cohort: str | None,
        now: datetime,
        *,
        force: bool = False,
    ) -> dict[str, Any]:
        r = self._get(rollouts, area, cohort)
        t = now.timestamp()
        if r["state"] != "running":
            raise SyncDataError(f"the rollout to {_key(area, cohort)} is {r['state']}")
        d = self.describe(r, t)
        if d["decision"] == "halt" and not force:
            raise SyncDataError(
                f"{len(d['failed'])} of {d['members']} cab(s) of the stage failed their health "
                "check: halt it (or --force)"
            )
        published = None
        if r["stage"] == len(r["stages"]) - 1:
            if r.get("cohort"):
                raise SyncDataError(f"the rollout to {_key(area, cohort)} is at its last stage")
            published = self.repo.published()
            published[area] = r["index"]
            r["state"] = "done"
            r["history"].append({"t_s": t, "event": "done: published to the area"})
        else:
            r["stage"] += 1
            r["stage_started_s"] = t
            r["threshold"] = self._threshold(r)
            r["history"].append({"t_s": t, "event": f"promoted to {r['stages'][r['stage']]:g}%"})
        self.repo.sign_rollouts(rollouts, now, published)
        return self.describe(r, t)

    def halt(self, area: str, cohort: str | None, now: datetime, reason: str) -> dict[str, Any]:
        with self._locked() as rollouts:
            return self._halt(rollouts, area, cohort, now, reason)

    def _halt(
        self, rollouts: dict[str, Any], area: str, cohort: str | None, now: datetime, reason: str
    ) -> dict[str, Any]:
        r = self._get(rollouts, area, cohort)
        t = now.timestamp()
        if r["state"] != "running":
            raise SyncDataError(f"the rollout to {_key(area, cohort)} is {r['state']}")
        r["state"] = "halted"
        r["history"].append({"t_s": t, "event": f"halted: {reason}"})
        self.repo.sign_rollouts(rollouts, now)  # withdrawn: the stage goes back
        return self.describe(r, t)

    def evaluate(self, now: datetime) -> list[dict[str, Any]]:
        """Apply the rules to every running rollout (run it from cron); what was done."""
        t = now.timestamp()
        done = []
        with self._locked() as rollouts:
            for _, r in sorted(rollouts.items()):
                d = self.describe(r, t)
                if d["decision"] == "halt":
                    reason = f"{len(d['failed'])} of {d['members']} cab(s) failed health"
                    done.append(self._halt(rollouts, r["area"], r.get("cohort"), now, reason))
                elif d["decision"] == "promote":
                    done.append(self._promote(rollouts, r["area"], r.get("cohort"), now))
        return done

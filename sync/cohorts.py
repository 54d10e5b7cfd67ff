"""Staged rollouts as the cab sees them (no server dependencies).

A rollout of a bundle to an area is two signed targets of the fleet's targets role, so TUF's
guarantees (signatures, rollback and freeze protection) cover it like any bundle index:

* ``areas/<area>/rollouts/<cohort>.json`` (``_all`` for the whole area): the candidate bundle,
  the stage's ``threshold``, a ``salt``;
* ``areas/<area>/candidates/<bundle id>.json``: the candidate's index (its chunks are targets
  too).

A cab is in the stage when ``stage_hash(salt, vehicle_id) <= threshold``: the server picks the
threshold so that the stage holds the wanted share of the registered vehicles (at least one).
The cab's vehicle id and cohort come from its local configuration, never from the network, so
whoever controls the network can neither move a cab into a stage or a cohort nor make it
install anything the targets key did not sign for that area.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable
from typing import Any

ROLLOUT_SCHEMA = 1
ALL = "_all"
_COHORT = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
MAX_HASH = 2**64 - 1


def check_cohort(cohort: str) -> str:
    if cohort == ALL or not _COHORT.match(cohort):
        raise ValueError(f"bad cohort name {cohort!r} (use [a-z0-9_-], at most 64)")
    return cohort


def rollout_target_path(area: str, cohort: str | None) -> str:
    return f"areas/{area}/rollouts/{cohort or ALL}.json"


def candidate_target_path(area: str, bundle_id: str) -> str:
    return f"areas/{area}/candidates/{bundle_id}.json"


def stage_hash(salt: str, vehicle_id: str) -> int:
    """A vehicle's place in a rollout: uniform in 0..2^64-1, fixed for a salt."""
    return int.from_bytes(hashlib.sha256(f"{salt}\0{vehicle_id}".encode()).digest()[:8], "big")


def threshold_for(salt: str, vehicles: Iterable[str], percent: float) -> int:
    """The threshold that puts ``percent`` % of ``vehicles`` (rounded up, at least one when
    there are any) in the stage; 100 % is everyone, also vehicles registered later."""
    if percent >= 100:
        return MAX_HASH
    ranks = sorted(stage_hash(salt, v) for v in set(vehicles))
    if not ranks:
        return -1
    k = max(1, math.ceil(len(ranks) * percent / 100.0))
    return ranks[k - 1]


def in_stage(doc: dict[str, Any], vehicle_id: str | None) -> bool:
    """Whether the signed rollout document ``doc`` takes this vehicle to its candidate."""
    if vehicle_id is None or doc.get("state") != "running":
        return False
    salt, threshold = doc.get("salt"), doc.get("threshold")
    if not isinstance(salt, str) or type(threshold) is not int:
        return False
    return stage_hash(salt, vehicle_id) <= threshold

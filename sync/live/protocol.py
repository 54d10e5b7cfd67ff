"""The live protocol's constants (schemas, the envelope's magic, event kinds, the ``LIVE_*``
refusal reasons, the bounds every decoder checks) and the integer check the decoders share."""

from __future__ import annotations

import re

from sync.errors import LiveInputError

HEARTBEAT_SCHEMA = 1
SNAPSHOT_SCHEMA = 1
ENVELOPE_MAGIC = "nagashi-live"
MSGPACK = "application/msgpack"
LIVE_ROLE = "live"

PICKUP = 1
DROPOFF = 2
EVENT_KINDS = (PICKUP, DROPOFF)

LIVE_BAD_SIGNATURE = "LIVE_BAD_SIGNATURE"
LIVE_STALE_VERSION = "LIVE_STALE_VERSION"
LIVE_EXPIRED = "LIVE_EXPIRED"
LIVE_NOT_YET_VALID = "LIVE_NOT_YET_VALID"
LIVE_MALFORMED = "LIVE_MALFORMED"
LIVE_OTHER_NETWORK = "LIVE_OTHER_NETWORK"
LIVE_NO_TRUST = "LIVE_NO_TRUST"
LIVE_UNREACHABLE = "LIVE_UNREACHABLE"  # a fetch outcome, not a refusal of a snapshot

MAX_HEARTBEAT_BYTES = 4096
MAX_EVENTS = 32
MAX_ROUTE_EDGES = 256
MAX_EDGE_ID = (1 << 31) - 1
MAX_T_S = 1 << 40
EVENT_MAX_AGE_S = 3600  # the longest pickup window of the snapshot
WINDOWS_S = (900, 1800, 3600)  # pickups in the last 15, 30, 60 minutes
MAX_COUNT = 0xFFFF  # counts saturate (uint16 on the wire)
_AREA = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def _int_in(v: object, lo: int, hi: int, what: str) -> int:
    if type(v) is not int or not lo <= v <= hi:
        raise LiveInputError(f"{what} must be an integer in {lo}..{hi}")
    return v

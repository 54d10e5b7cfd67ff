"""Whether a snapshot is the fleet's: the live role's keys from the cab's TUF metadata
(:class:`LiveTrust`, :class:`TrustSource`) and :func:`verify_snapshot` (signature, version,
clock, area, network)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sync._fs import read_bounded, sha256_bytes
from sync.errors import LiveInputError, LiveRefusedError, SyncDataError
from sync.live.envelope import open_envelope
from sync.live.protocol import (
    LIVE_BAD_SIGNATURE,
    LIVE_EXPIRED,
    LIVE_MALFORMED,
    LIVE_NO_TRUST,
    LIVE_NOT_YET_VALID,
    LIVE_OTHER_NETWORK,
    LIVE_ROLE,
    LIVE_STALE_VERSION,
)
from sync.live.snapshot import Snapshot, decode_body

if TYPE_CHECKING:  # tuf (and securesystemslib, boto3) load with the first trust read
    from securesystemslib.signer import Signature  # type: ignore[attr-defined]  # not in the package's __all__
    from tuf.api.metadata import Metadata, Root, Targets  # type: ignore[attr-defined]  # not in the package's __all__


class LiveTrust:
    """The live role's keys, from targets metadata verified against a trusted root."""

    def __init__(self, targets: Metadata[Targets]) -> None:
        d = targets.signed.delegations
        if d is None or d.roles is None or LIVE_ROLE not in d.roles:
            raise LiveRefusedError(LIVE_NO_TRUST, "the fleet's targets delegate no live role")
        self._targets = targets.signed

    @classmethod
    def from_metadata(cls, root_json: bytes, targets_json: bytes) -> LiveTrust:
        """Trust from a root the cab trusts and the targets that root signed."""
        from tuf.api.metadata import Metadata

        try:
            root: Metadata[Root] = Metadata.from_bytes(root_json)
            targets: Metadata[Targets] = Metadata.from_bytes(targets_json)
            root.signed.verify_delegate("targets", targets.signed_bytes, targets.signatures)
        except Exception as e:  # tuf raises its own family and ValueError/TypeError
            raise LiveRefusedError(
                LIVE_NO_TRUST, f"trusted metadata unusable: {type(e).__name__}: {e}"
            ) from e
        if targets.signed.is_expired(datetime.now(UTC)):
            raise LiveRefusedError(LIVE_NO_TRUST, "the trusted targets metadata has expired")
        return cls(targets)

    def keyids(self) -> list[str]:
        d = self._targets.delegations
        assert d is not None and d.roles is not None
        return list(d.roles[LIVE_ROLE].keyids)

    def verify(self, body: bytes, sigs: dict[str, Signature]) -> None:
        try:
            self._targets.verify_delegate(LIVE_ROLE, body, sigs)
        except Exception as e:
            raise LiveRefusedError(LIVE_BAD_SIGNATURE, f"{type(e).__name__}: {e}") from e


class TrustSource:
    """The cab's live trust from its TUF metadata folder (``BundleStore.tuf_dir``: root.json
    and targets.json as python-tuf's ngclient left them), read again when either changes (a
    rotated live key arrives with the next bundle pull)."""

    def __init__(self, tuf_dir: str | Path) -> None:
        self.tuf_dir = Path(tuf_dir)
        self._stamp: tuple[int, ...] | None = None
        self._trust: LiveTrust | None = None

    def current(self) -> LiveTrust:
        paths = (self.tuf_dir / "root.json", self.tuf_dir / "targets.json")
        try:
            stamp = tuple(x for p in paths for x in (p.stat().st_mtime_ns, p.stat().st_size))
        except OSError as e:
            raise LiveRefusedError(LIVE_NO_TRUST, f"no trusted metadata in {self.tuf_dir}") from e
        if stamp != self._stamp or self._trust is None:
            try:
                docs = [read_bounded(p, 8 << 20) for p in paths]
            except (OSError, SyncDataError) as e:
                raise LiveRefusedError(LIVE_NO_TRUST, f"trusted metadata: {e}") from e
            self._trust = LiveTrust.from_metadata(docs[0], docs[1])
            self._stamp = stamp
        return self._trust


def verify_snapshot(
    data: bytes,
    trust: LiveTrust,
    now: float,
    *,
    area: str,
    last_version: int = 0,
    network: str | None = None,
    skew_s: float = 60.0,
    max_bytes: int = 1 << 20,
) -> Snapshot:
    """Verify and decode an envelope; raises :class:`LiveRefusedError` with the reason."""
    if len(data) > max_bytes:
        raise LiveRefusedError(LIVE_MALFORMED, f"{len(data)} bytes, more than {max_bytes}")
    try:
        body, sigs = open_envelope(data)
    except LiveInputError as e:
        raise LiveRefusedError(LIVE_MALFORMED, str(e)) from e
    trust.verify(body, sigs)  # before parsing the body: only the fleet's bytes are inflated
    try:
        snap = decode_body(body, sha256=sha256_bytes(data), max_bytes=8 * max_bytes)
    except LiveInputError as e:
        raise LiveRefusedError(LIVE_MALFORMED, str(e)) from e
    if snap.area != area:
        raise LiveRefusedError(LIVE_MALFORMED, f"snapshot of area {snap.area!r}, not {area!r}")
    if snap.version <= last_version:
        raise LiveRefusedError(
            LIVE_STALE_VERSION, f"version {snap.version} is not newer than {last_version}"
        )
    if now > snap.expires_s + skew_s:
        raise LiveRefusedError(
            LIVE_EXPIRED, f"expired {now - snap.expires_s:.0f} s ago by this cab's clock"
        )
    if now < snap.built_s - skew_s:
        raise LiveRefusedError(
            LIVE_NOT_YET_VALID, f"built {snap.built_s - now:.0f} s ahead of this cab's clock"
        )
    if network is not None and snap.network and snap.network != network:
        raise LiveRefusedError(
            LIVE_OTHER_NETWORK, f"links of network {snap.network[:12]}, not {network[:12]}"
        )
    return snap

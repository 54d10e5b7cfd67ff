"""The signed envelope around a snapshot body: ``["nagashi-live", 1, body, [[keyid, signature],
...]]`` (written by :func:`sign_envelope`, shape-checked by :func:`open_envelope`, or by
:func:`envelope_body` for a body whose signatures were checked before: securesystemslib, and
the boto3 its signer package imports, are loaded only by the first signature made or read)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import msgpack

from sync.errors import LiveInputError
from sync.live.protocol import ENVELOPE_MAGIC, SNAPSHOT_SCHEMA

if TYPE_CHECKING:
    from securesystemslib.signer import Signature  # type: ignore[attr-defined]  # not in the package's __all__


def sign_envelope(body: bytes, signers: Sequence[Any]) -> bytes:
    """``["nagashi-live", 1, body, [[keyid, signature], ...]]`` (securesystemslib signers)."""
    sigs = [[s.public_key.keyid, bytes.fromhex(s.sign(body).signature)] for s in signers]
    out: bytes = msgpack.packb([ENVELOPE_MAGIC, SNAPSHOT_SCHEMA, body, sigs], use_bin_type=True)
    return out


def open_envelope(data: bytes) -> tuple[bytes, dict[str, Signature]]:
    """The body and signatures of an envelope (shape checked, nothing verified)."""
    from securesystemslib.signer import Signature  # type: ignore[attr-defined]  # not in the package's __all__

    body, sigs = _unpack(data)
    return body, {k: Signature(k, v.hex()) for k, v in sigs.items()}


def envelope_body(data: bytes) -> bytes:
    """The body of an envelope, shape checked as :func:`open_envelope` does (an archived
    snapshot: its signatures were verified when it was accepted)."""
    return _unpack(data)[0]


def _unpack(data: bytes) -> tuple[bytes, dict[str, bytes]]:
    try:
        doc = msgpack.unpackb(data, raw=False, strict_map_key=True, max_array_len=64)
    except Exception as e:
        raise LiveInputError(f"envelope is not msgpack: {type(e).__name__}") from e
    if (
        not isinstance(doc, list)
        or len(doc) != 4
        or doc[0] != ENVELOPE_MAGIC
        or doc[1] != SNAPSHOT_SCHEMA
        or type(doc[2]) is not bytes
        or not isinstance(doc[3], list)
    ):
        raise LiveInputError("not a schema-1 live envelope")
    sigs: dict[str, bytes] = {}
    for s in doc[3]:
        if (
            not isinstance(s, list)
            or len(s) != 2
            or not isinstance(s[0], str)
            or not re.fullmatch(r"[0-9a-f]{64}", s[0])
            or type(s[1]) is not bytes
            or len(s[1]) > 512
        ):
            raise LiveInputError("a signature is [keyid (64 hex), bytes]")
        sigs[s[0]] = s[1]
    return doc[2], sigs

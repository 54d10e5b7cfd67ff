"""Checks of the options that name the fleet server (``--server``, ``--sync-server``,
``--ca-file``), made before anything is fetched or changed. Apart from :mod:`tools.errors`,
whose import closure every pipeline step shares, so that a change to the TLS code does not
change the code version of the steps that never talk to a server."""

from __future__ import annotations

from tools.errors import ToolsError

CA_FILE_HELP = "PEM file of the CA of the fleet server's TLS certificate (default: the system's)"


def check_ca_file(args: object) -> str | None:
    """``args.ca_file`` if absent or a readable PEM file of certificates, else ToolsError
    (before anything is fetched or changed)."""
    ca_file = getattr(args, "ca_file", None)
    if not ca_file:
        return None
    from sync._tls import client_verify
    from sync.errors import SyncDataError

    try:
        client_verify(ca_file)
    except SyncDataError as e:
        raise ToolsError(f"--ca-file: {e}") from e
    return str(ca_file)


def check_server_url(url: str, option: str) -> str:
    """``url`` if it is an http(s) URL with a host, else ToolsError (before any retry loop)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018 (raises ValueError on a bad port)
    except ValueError:
        ok = False
    if not ok:
        raise ToolsError(f"{option}: expected http://HOST[:PORT] or https://..., got {url!r}")
    return url

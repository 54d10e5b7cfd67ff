"""Errors of the command-line layer."""

from __future__ import annotations

import importlib


class ToolsError(Exception):
    """A command was used wrongly or its inputs are unusable (one line for the user)."""


#: Error roots of every package; the CLI prints these as one line, never a traceback.
_ERROR_ROOTS: tuple[tuple[str, str], ...] = (
    ("tiles.errors", "TilesError"),
    ("models.errors", "ModelsError"),
    ("safety.errors", "SafetyError"),
    ("sync.errors", "SyncError"),
    ("agent.errors", "AgentError"),
)


def known_errors() -> tuple[type[BaseException], ...]:
    """The exception types the CLI reports as one clear line."""
    found: list[type[BaseException]] = [ToolsError]
    for module_name, cls_name in _ERROR_ROOTS:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        cls = getattr(module, cls_name, None)
        if isinstance(cls, type) and issubclass(cls, BaseException):
            found.append(cls)
    return tuple(found)


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

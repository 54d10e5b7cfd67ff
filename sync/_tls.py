"""TLS on the cab's and the engineer's side: the certificate authority that the fleet server's
certificate must chain to (``--ca-file``), and telling a refused certificate from a network
failure (one is retried later, the other is a configuration to fix: never retried)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sync.errors import SyncAuthError, SyncDataError

if TYPE_CHECKING:  # ssl loads with the first context (or with httpx): not at the agent's start
    import ssl


def client_verify(ca_file: str | None) -> ssl.SSLContext | bool:
    """What httpx's ``verify=`` gets: the system's trust store (True) without ``ca_file``, else
    a context trusting only the CA certificates in ``ca_file`` (PEM), host names checked."""
    if not ca_file:
        return True
    import ssl

    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as e:
        raise SyncDataError(f"CA file {ca_file}: not readable PEM certificates ({e})") from e


def certificate_problem(e: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate verification error behind ``e`` (httpx wraps it), if any."""
    import ssl

    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, ssl.SSLCertVerificationError):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return None


def certificate_refused(url: str, problem: ssl.SSLCertVerificationError) -> SyncAuthError:
    reason = problem.verify_message or problem.reason or str(problem)
    return SyncAuthError(
        f"{url}: the server's TLS certificate is refused ({reason}); check --ca-file and the "
        "host name in the URL"
    )

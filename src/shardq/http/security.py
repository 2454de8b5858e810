"""Who may ask what: the Host-header check, the bearer tokens and the security headers.

- Only configured host names are served (a DNS-rebinding page reaches the server under a name
  of its own, which is refused). ``/healthz`` answers any host: load balancers probe by address.
- With an API token configured, every ``/api/`` request (reads, writes, the event stream)
  needs ``Authorization: Bearer <token>``; ``/metrics`` takes the API token or, when one is
  set, the metrics token. The dashboard's page and assets, ``/openapi.json`` and ``/healthz``
  hold no data and stay open.
- Every response says ``X-Content-Type-Options: nosniff`` and ``Referrer-Policy: no-referrer``;
  responses without a policy of their own (all but the dashboard's files) get
  ``Content-Security-Policy: default-src 'none'; frame-ancestors 'none'``.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Collection, Iterable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .wire import JsonResponse

#: The host names a server answers to unless told otherwise.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
#: In ``allowed_hosts``, a name that turns the Host-header check off.
ANY_HOST = "*"
API_CSP = "default-src 'none'; frame-ancestors 'none'"
DASHBOARD_CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self';"
    " connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
_OPEN_PATHS = ("/healthz",)


def normalize_host(name: str) -> str:
    """A host name or address as it is compared with a request's Host header (no port,
    lower case, IPv6 in brackets); ValueError when ``name`` is not one."""
    host = name.strip().lower().rstrip(".")
    if host == ANY_HOST:
        return host
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        address = ipaddress.ip_address(bare)
    except ValueError:
        if not host or any(c in host for c in "/:@[] \t") or not host.isascii():
            raise ValueError(f"{name!r} is not a host name or address") from None
        return host
    return f"[{address.compressed}]" if address.version == 6 else address.compressed


def request_host(header: str) -> str:
    """The host part of a Host header, normalised ('' when it names no host)."""
    header = header.strip()
    if header.startswith("["):
        host = header[: header.find("]") + 1]
    else:
        host = header.rpartition(":")[0] if ":" in header else header
    try:
        return normalize_host(host) if host else ""
    except ValueError:
        return ""


class Guard:
    """ASGI middleware: refuse unknown Host headers, then add the security headers."""

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str]) -> None:
        self.app = app
        hosts = {normalize_host(h) for h in allowed_hosts}
        self.hosts: frozenset[str] | None = None if ANY_HOST in hosts else frozenset(hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.setdefault("headers", [])
                present = {k.lower() for k, _ in headers}
                for name, value in _HEADERS:
                    if name not in present:
                        headers.append((name, value))
            await send(message)

        refusal = self._refusal(scope)
        if refusal is not None:
            await refusal(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    def _refusal(self, scope: Scope) -> JsonResponse | None:
        if self.hosts is None or _route_path(scope) in _OPEN_PATHS:
            return None
        raw = Headers(scope=scope).get("host", "")
        if request_host(raw) in self.hosts:
            return None
        names = ", ".join(sorted(self.hosts))
        return JsonResponse(
            {
                "error": {
                    "reason": "BadHost",
                    "message": f"this server does not answer to the host name {raw!r}"
                    f" (it answers to {names}; name others with --allowed-host"
                    " or SHARDQ_ALLOWED_HOSTS)",
                }
            },
            status_code=400,
        )


_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", API_CSP.encode()),
]


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


class Tokens:
    """The bearer tokens of an app: ``api`` for everything under /api/ (None: no token is
    configured, reads are open and writes refused), ``metrics`` also accepted on /metrics."""

    def __init__(self, api: str | None, metrics: str | None) -> None:
        self.api = api.encode() if api else None
        self.metrics = metrics.encode() if metrics else None

    def problem(self, authorization: str, kind: str) -> str | None:
        """Why a request of ``kind`` (read, write or metrics) with this Authorization header
        is refused, or None when it may proceed."""
        if kind == "write" and self.api is None:
            return (
                "writes are disabled: the server was started without an API token"
                " (set SHARDQ_API_TOKEN)"
            )
        accepted = _accepted(self.api, self.metrics if kind == "metrics" else None)
        if not accepted:
            return None
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return "this server needs 'Authorization: Bearer <token>'"
        given_bytes = given.strip().encode("utf-8", "surrogateescape")
        # Compare with every accepted token (no early exit) so timing tells nothing.
        ok = False
        for token in accepted:
            ok |= hmac.compare_digest(given_bytes, token)
        return None if ok else "the bearer token is not valid"


def _accepted(*tokens: bytes | None) -> Collection[bytes]:
    return [t for t in tokens if t is not None]

"""FastAPI (and plain Starlette) helpers: start and stop the service with the application,
hand it to endpoints, and mount the HTTP API and dashboard under a path of the application.

::

    from fastapi import Depends, FastAPI
    from shardq import JobService
    from shardq.contrib.fastapi import dependency, lifespan, mount

    jobs = JobService("postgresql://…", runner=False)    # web workers submit; workers run
    app = FastAPI(lifespan=lifespan(jobs))
    mount(app, jobs, "/jobs", token=API_TOKEN, auth=require_staff)

    @app.post("/orders")
    async def create(order: Order, jobs: JobService = Depends(dependency(jobs))) -> dict: ...

Only Starlette (a dependency of shardq) is imported here: the helpers work the same for a
Starlette application, and importing this module does not import FastAPI.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from ..http import DEFAULT_MAX_BODY, create_app
from ..http.security import LOOPBACK_HOSTS
from ..jobs import JobService

#: An application's lifespan: a function of the application giving an async context.
Lifespan = Callable[[Any], contextlib.AbstractAsyncContextManager[Any]]
#: A check run before each request to the mounted API: raise ``HTTPException`` to refuse.
Auth = Callable[[Request], Awaitable[object] | object]

__all__ = ["Auth", "Lifespan", "dependency", "lifespan", "mount"]


def lifespan(jobs: JobService, then: Lifespan | None = None) -> Lifespan:
    """A lifespan that starts ``jobs`` before the application serves and stops it (letting
    running handlers finish) after; ``then``, the application's own lifespan, runs inside
    it and its state is passed on."""

    @contextlib.asynccontextmanager
    async def run(app: Any) -> AsyncIterator[Any]:
        async with jobs:
            if then is None:
                yield None
            else:
                async with then(app) as state:
                    yield state

    return run


def dependency(jobs: JobService) -> Callable[[], JobService]:
    """A dependency giving ``jobs`` to endpoints: ``Depends(dependency(jobs))``."""

    def provide() -> JobService:
        return jobs

    return provide


def mount(
    app: Any,
    jobs: JobService,
    path: str = "/shardq",
    *,
    token: str | None,
    auth: Auth | None = None,
    allowed_hosts: Collection[str] = LOOPBACK_HOSTS,
    metrics_token: str | None = None,
    max_body: int = DEFAULT_MAX_BODY,
) -> ASGIApp:
    """Serve shardq's HTTP API, ``/metrics``, ``/healthz``, ``/openapi.json`` and the
    dashboard under ``path`` of ``app`` (a FastAPI or Starlette application); returns the
    mounted ASGI application.

    ``token``, ``allowed_hosts``, ``metrics_token`` and ``max_body`` are those of
    ``shardq.http.create_app`` (the token still guards every API request). ``auth``, the
    application's own check, runs first on every request under ``path``: a function (or
    coroutine function) of the Request that raises ``HTTPException`` to refuse it.
    """
    if not isinstance(path, str) or not path.startswith("/") or path == "/":
        raise ValueError(f"path must start with '/' and name a prefix, got {path!r}")
    served: ASGIApp = create_app(
        jobs, token, max_body=max_body, metrics_token=metrics_token, allowed_hosts=allowed_hosts
    )
    if auth is not None:
        served = _Guarded(served, auth)
    app.mount(path.rstrip("/"), served)
    return served


class _Guarded:
    """An ASGI application behind the application's own ``auth`` check."""

    def __init__(self, app: ASGIApp, auth: Auth) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            try:
                checked = self.auth(Request(scope, receive))
                if inspect.isawaitable(checked):
                    await checked
            except HTTPException as e:
                reason = {401: "Unauthorized", 403: "Forbidden"}.get(e.status_code, "Refused")
                body = {"error": {"reason": reason, "message": e.detail}}
                await JSONResponse(body, e.status_code, headers=e.headers)(scope, receive, send)
                return
        await self.app(scope, receive, send)

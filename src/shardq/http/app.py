"""The HTTP API and dashboard of one JobService, as an ASGI application.

With a token configured, every API request (reads, writes and the event stream) needs
``Authorization: Bearer <token>`` (see :mod:`.security` for the whole model). Bodies are JSON
only and limited in size. Every error is ``{"error": {"reason": ..., "message": ...}}`` with a
4xx status, and a refused request changes nothing.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Collection, Coroutine
from importlib import resources
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from ..errors import JobError
from ..jobs import JobService
from ..models import PRIORITIES, STATUSES, JobPayload, SubmitResult
from ..schema import MAX_BATCH, BadJson, BatchRequest, SubmitRequest, WrongShape, decode
from ..tasks import add_task_schemas, task_of
from .inputs import ApiError, Query, as_object, invalid, only, path_id, require_empty
from .limits import LimitEndpoints, limit_routes
from .live import LiveFeed
from .openapi import build_spec
from .runners import cluster_json
from .schedules import ScheduleEndpoints, schedule_routes
from .security import API_CSP, DASHBOARD_CSP, LOOPBACK_HOSTS, Guard, Tokens, normalize_host
from .wire import JsonResponse, parse_body

log = logging.getLogger("shardq.http")
T = TypeVar("T")

#: Largest request body accepted, in bytes.
DEFAULT_MAX_BODY = 2 * 1024 * 1024
_STATUS_OF_REASON = {
    "NotFound": 404,
    "AlreadyCancelled": 409,
    "Validation": 400,
    "HandlerMissing": 400,
    "Timeout": 408,
    "RunnerUnavailable": 503,
    "Processing": 400,
    "MaxRetries": 400,
}
_STATIC = resources.files("shardq.http") / "static"


def error_response(status: int, reason: str, message: str) -> JsonResponse:
    """The one shape of every error the API returns."""
    # The security headers are set here too: a 500 is sent past the middleware that adds them.
    headers = {
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Content-Security-Policy": API_CSP,
    }
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="shardq"'
    return JsonResponse(
        {"error": {"reason": reason, "message": message}}, status_code=status, headers=headers
    )


Endpoint = Callable[[Request], Coroutine[Any, Any, Response]]


class _Api:
    def __init__(self, jobs: JobService, tokens: Tokens, feed: LiveFeed, max_body: int) -> None:
        self.jobs = jobs
        self.tokens = tokens
        self.feed = feed
        self.max_body = max_body

    # -- plumbing ------------------------------------------------------------------------

    async def raw_body(self, request: Request, *, required: bool = True) -> bytes:
        """The request's JSON body as bytes, within the size limit (empty when optional)."""
        length = request.headers.get("content-length")
        if length is not None:
            if not (length.isascii() and length.isdigit()):
                raise invalid("Content-Length is not a number")
            if int(length) > self.max_body:
                raise _too_large(self.max_body)
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body:
                raise _too_large(self.max_body)
            chunks.append(chunk)
        raw = b"".join(chunks)
        if not raw.strip():
            if required:
                raise invalid("a JSON request body is required")
            return b""
        ctype = request.headers.get("content-type", "")
        if ctype.split(";")[0].strip().lower() != "application/json":
            raise ApiError(
                415, "UnsupportedMediaType", "request bodies must be JSON (application/json)"
            )
        return raw

    async def body(self, request: Request, *, required: bool = True) -> Any:
        """The request's JSON body, within the size limit; None when empty and optional."""
        raw = await self.raw_body(request, required=required)
        if not raw:
            return None
        try:
            return parse_body(raw)
        except BadJson as e:
            raise invalid(f"malformed JSON body: {e}") from None

    async def decoded(self, request: Request, kind: type[T]) -> T:
        """The request's JSON body as a ``kind`` (see :mod:`shardq.schema`)."""
        raw = await self.raw_body(request)
        try:
            return decode(raw, kind)
        except BadJson as e:
            raise invalid(f"malformed JSON body: {e}") from None
        except WrongShape as e:
            raise invalid(str(e)) from None

    def guard(self, kind: str, fn: Endpoint) -> Endpoint:
        """``fn`` behind the token check of ``kind`` (read, write or metrics)."""

        async def guarded(request: Request) -> Response:
            problem = self.tokens.problem(request.headers.get("authorization", ""), kind)
            if problem is not None:
                raise ApiError(401, "Unauthorized", problem)
            return await fn(request)

        guarded.__name__ = fn.__name__
        return guarded

    async def store(self, specs: list[JobPayload], delay: float) -> list[SubmitResult]:
        """Submit ``specs``; what the service cannot even check is a refusal too. A typed
        task's payload must fit its declared type (as ``Task.submit`` checks in Python)."""
        for spec in specs:
            task = task_of(self.jobs, spec.type)
            if task is not None:
                task.payload_codec.decode(spec.payload)
        try:
            return await self.jobs.submit_many(specs, delay=delay)
        except RecursionError:
            raise invalid("a payload is nested too deeply") from None
        except OverflowError as e:
            raise invalid(f"a number is out of range: {e}") from None

    # -- jobs ----------------------------------------------------------------------------

    async def submit(self, request: Request) -> Response:
        body = await self.decoded(request, SubmitRequest)
        [result] = await self.store([body.spec()], body.delay)
        if not result.duplicate:
            self.feed.note_submitted([result.job_id])
        return JsonResponse(
            {"id": result.job_id, "duplicate": result.duplicate},
            status_code=200 if result.duplicate else 201,
        )

    async def submit_batch(self, request: Request) -> Response:
        body = await self.decoded(request, BatchRequest)
        results = await self.store([job.spec() for job in body.jobs], body.delay)
        self.feed.note_submitted([r.job_id for r in results if not r.duplicate])
        return JsonResponse(
            {"jobs": [{"id": r.job_id, "duplicate": r.duplicate} for r in results]},
            status_code=201,
        )

    async def get_job(self, request: Request) -> Response:
        st = await self.jobs.status(path_id(request, "job_id"))
        return JsonResponse(st.to_dict())

    async def cancel(self, request: Request) -> Response:
        require_empty(await self.body(request, required=False))
        job_id = path_id(request, "job_id")
        await self.jobs.cancel(job_id)
        st = await self.jobs.status(job_id)
        return JsonResponse(st.to_dict(), status_code=202 if st.status != "cancelled" else 200)

    async def list_jobs(self, request: Request) -> Response:
        q = Query(
            request, {"status", "type", "priority", "key", "since", "until", "limit", "before"}
        )
        limit = q.integer("limit", 50, 1, 1000)
        status = q.choice("status", STATUSES)
        priority = q.choice("priority", PRIORITIES)
        rows = await self.jobs.list_jobs(
            status=status,  # type: ignore[arg-type]
            type=q.text("type"),
            priority=priority,  # type: ignore[arg-type]
            key=q.text("key"),
            created_after=q.time("since"),
            created_before=q.time("until"),
            limit=limit,
            before=q.ident("before"),
        )
        nxt = rows[-1].id if len(rows) == limit else None
        return JsonResponse({"jobs": [r.to_dict() for r in rows], "next": nxt})

    # -- dead letters --------------------------------------------------------------------

    async def list_dead_letters(self, request: Request) -> Response:
        q = Query(request, {"limit", "before"})
        limit = q.integer("limit", 50, 1, 1000)
        rows = await self.jobs.dead_letters(limit=limit, before=q.ident("before"))
        nxt = rows[-1].id if len(rows) == limit else None
        return JsonResponse({"dead_letters": [d.to_dict() for d in rows], "next": nxt})

    async def get_dead_letter(self, request: Request) -> Response:
        d = await self.jobs.dead_letter(path_id(request, "dlq_id"))
        return JsonResponse(d.to_dict())

    async def _replay_one(self, dlq_id: str) -> str:
        d = await self.jobs.dead_letter(dlq_id)
        if d.replayed_at is not None:
            raise ApiError(
                409,
                "AlreadyReplayed",
                f"dead letter {dlq_id} was already replayed as job {d.replay_job_id}",
            )
        try:
            job_id = await self.jobs.replay(dlq_id)
        except JobError as e:
            if e.reason == "Validation":  # replayed by someone else in the meantime
                raise ApiError(409, "AlreadyReplayed", str(e)) from None
            raise
        self.feed.note_replayed()
        self.feed.note_submitted([job_id])
        return job_id

    async def replay(self, request: Request) -> Response:
        require_empty(await self.body(request, required=False))
        dlq_id = path_id(request, "dlq_id")
        job_id = await self._replay_one(dlq_id)
        return JsonResponse({"dlq_id": dlq_id, "job_id": job_id}, status_code=201)

    async def replay_many(self, request: Request) -> Response:
        data = as_object(await self.body(request), "the body")
        only(data, {"ids", "all"}, "the body")
        every = data.get("all", False)
        if not isinstance(every, bool):
            raise invalid("'all' must be true or false")
        ids = data.get("ids")
        if every == (ids is not None):
            raise invalid("give either 'ids' (an array) or 'all': true")
        if ids is not None:
            if (
                not isinstance(ids, list)
                or not ids
                or len(ids) > MAX_BATCH
                or not all(isinstance(i, str) for i in ids)
            ):
                raise invalid(
                    f"'ids' must be a non-empty array of at most {MAX_BATCH} dead-letter ids"
                )
            targets: list[str] = list(dict.fromkeys(ids))
        else:
            targets = []
            before = None
            while True:
                page = await self.jobs.dead_letters(limit=500, before=before)
                if not page:
                    break
                targets.extend(d.id for d in page if d.replayed_at is None)
                before = page[-1].id
        replayed: list[dict[str, str]] = []
        failed: list[dict[str, Any]] = []
        for dlq_id in targets:
            try:
                replayed.append({"dlq_id": dlq_id, "job_id": await self._replay_one(dlq_id)})
            except (JobError, ApiError) as e:
                reason = e.reason
                failed.append({"dlq_id": dlq_id, "error": {"reason": reason, "message": str(e)}})
        return JsonResponse({"replayed": replayed, "failed": failed})

    # -- operations ----------------------------------------------------------------------

    async def stats(self, request: Request) -> Response:
        Query(request, {"series"}).flag("series")
        await self.feed.ensure_started()
        data = self.feed.snapshot()
        if request.query_params.get("series") in ("1", "true"):
            data["series"] = self.feed.series()
        return JsonResponse(data)

    async def runners(self, request: Request) -> Response:
        Query(request, set())
        return JsonResponse(await cluster_json(self.jobs))

    async def events(self, request: Request) -> Response:
        Query(request, set())

        async def gen() -> AsyncIterator[str]:
            async for msg in self.feed.stream():
                yield msg

        return StreamingResponse(
            gen(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def metrics(self, request: Request) -> Response:
        return Response(
            self.jobs.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    async def healthz(self, request: Request) -> Response:
        problem = self.jobs.health_problem()
        if problem is not None:
            return JsonResponse({"status": "failing", "message": problem}, status_code=503)
        return JsonResponse(
            {"status": "ok", "runner": self.jobs.runs_jobs, "runner_id": self.jobs.runner_id}
        )

    async def openapi(self, request: Request) -> Response:
        return JsonResponse(add_task_schemas(build_spec(), self.jobs))

    async def dashboard(self, request: Request) -> Response:
        return _static_file("index.html")

    async def asset(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ("app.js", "style.css", "chart.js", "operate.js", "limits.js"):
            raise ApiError(404, "NotFound", f"no asset named {name!r}")
        return _static_file(name)


def _static_file(name: str) -> Response:
    path = _STATIC / name
    media = {
        ".html": "text/html; charset=utf-8",
        ".js": "text/javascript; charset=utf-8",
        ".css": "text/css; charset=utf-8",
    }
    suffix = name[name.rfind(".") :]
    with resources.as_file(path) as real:
        return FileResponse(
            real,
            media_type=media[suffix],
            headers={
                "Cache-Control": "no-cache",
                "Content-Security-Policy": DASHBOARD_CSP,
            },
        )


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "PayloadTooLarge", f"request body is over the limit of {limit} bytes")


async def _on_api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.reason, exc.message)


async def _on_job_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, JobError)
    return error_response(_STATUS_OF_REASON.get(exc.reason, 400), exc.reason, str(exc))


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    reasons = {404: "NotFound", 405: "MethodNotAllowed"}
    detail = exc.detail
    if exc.status_code == 404:
        detail = f"no such endpoint: {request.method} {request.url.path} (see /openapi.json)"
    return error_response(exc.status_code, reasons.get(exc.status_code, "BadRequest"), detail)


async def _on_client_disconnect(request: Request, exc: Exception) -> Response:
    # The client went away before its body arrived: nothing to answer, nothing went wrong.
    log.info("client left during %s %s before sending its body", request.method, request.url.path)
    return Response(status_code=400)


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error in %s %s", request.method, request.url.path)
    return error_response(500, "Internal", "unexpected server error (see the server log)")


def create_app(
    jobs: JobService,
    token: str | None,
    *,
    max_body: int = DEFAULT_MAX_BODY,
    feed: LiveFeed | None = None,
    metrics_token: str | None = None,
    allowed_hosts: Collection[str] = LOOPBACK_HOSTS,
) -> ASGIApp:
    """The API, ``/metrics``, ``/healthz``, ``/openapi.json`` and the dashboard of ``jobs``.

    ``token`` is the bearer token every API request (read or write, and the event stream)
    must carry; with None, reads are open and writes answer 401. ``/metrics`` takes ``token``
    or ``metrics_token``. Only requests whose Host header names one of ``allowed_hosts``
    (loopback names by default; ``"*"`` for any) are served, ``/healthz`` excepted. ``jobs``
    must be started by its owner (the app does not start or stop it). The app may be mounted
    under a prefix in another ASGI application.
    """
    if max_body < 1024:
        raise ValueError("max_body must be at least 1024 bytes")
    if isinstance(allowed_hosts, str) or not allowed_hosts:
        raise ValueError("allowed_hosts must be a non-empty collection of host names")
    hosts = [normalize_host(h) for h in allowed_hosts]
    live = feed if feed is not None else LiveFeed(jobs)
    api = _Api(jobs, Tokens(token, metrics_token), live, max_body)

    def r(fn: Endpoint) -> Endpoint:
        return api.guard("read", fn)

    def w(fn: Endpoint) -> Endpoint:
        return api.guard("write", fn)

    routes = [
        Route("/", api.dashboard, methods=["GET"]),
        Route("/static/{name}", api.asset, methods=["GET"]),
        Route("/healthz", api.healthz, methods=["GET"]),
        Route("/metrics", api.guard("metrics", api.metrics), methods=["GET"]),
        Route("/openapi.json", api.openapi, methods=["GET"]),
        Route("/api/jobs", r(api.list_jobs), methods=["GET"]),
        Route("/api/jobs", w(api.submit), methods=["POST"]),
        Route("/api/jobs/batch", w(api.submit_batch), methods=["POST"]),
        Route("/api/jobs/{job_id}", r(api.get_job), methods=["GET"]),
        Route("/api/jobs/{job_id}/cancel", w(api.cancel), methods=["POST"]),
        Route("/api/dead-letters", r(api.list_dead_letters), methods=["GET"]),
        Route("/api/dead-letters/replay", w(api.replay_many), methods=["POST"]),
        Route("/api/dead-letters/{dlq_id}", r(api.get_dead_letter), methods=["GET"]),
        Route("/api/dead-letters/{dlq_id}/replay", w(api.replay), methods=["POST"]),
        Route("/api/stats", r(api.stats), methods=["GET"]),
        Route("/api/runners", r(api.runners), methods=["GET"]),
        Route("/api/events", r(api.events), methods=["GET"]),
        *schedule_routes(ScheduleEndpoints(jobs, api), r, w),
        *limit_routes(LimitEndpoints(jobs, api), r, w),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # Standalone, sample from the start so the charts have history; mounted apps (whose
        # lifespan may not run) start the feed on first use.
        with contextlib.suppress(JobError):
            await live.ensure_started()
        yield
        await live.close()

    app = Starlette(
        routes=routes,
        middleware=[Middleware(Guard, allowed_hosts=hosts)],
        exception_handlers={
            ApiError: _on_api_error,
            JobError: _on_job_error,
            HTTPException: _on_http_error,
            ClientDisconnect: _on_client_disconnect,
            Exception: _on_unexpected,
        },
        lifespan=lifespan,
    )
    app.state.feed = live
    app.state.jobs = jobs
    return app

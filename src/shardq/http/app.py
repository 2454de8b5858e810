"""The HTTP API and dashboard of one JobService, as an ASGI application.

Reads are open; every write needs ``Authorization: Bearer <token>``. Bodies are JSON only and
limited in size. Every error is ``{"error": {"reason": ..., "message": ...}}`` with a 4xx
status, and a refused request changes nothing.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import logging
import math
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import datetime
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from ..errors import JobError
from ..jobs import MAX_SECONDS, JobService
from ..models import DURATIONS, PRIORITIES, STATUSES, JobPayload
from .live import LiveFeed
from .openapi import build_spec

log = logging.getLogger("shardq.http")

#: Largest request body accepted, in bytes.
DEFAULT_MAX_BODY = 2 * 1024 * 1024
_MAX_BATCH = 1000
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
_JOB_FIELDS = {
    "type",
    "payload",
    "priority",
    "key",
    "dedupe_key",
    "max_attempts",
    "timeout",
    "duration",
}
_STATIC = resources.files("shardq.http") / "static"


class ApiError(Exception):
    """A refused request: its HTTP status, a machine-readable reason and a message."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


def error_response(status: int, reason: str, message: str) -> JSONResponse:
    """The one shape of every error the API returns."""
    headers = {"WWW-Authenticate": 'Bearer realm="shardq"'} if status == 401 else None
    return JSONResponse(
        {"error": {"reason": reason, "message": message}}, status_code=status, headers=headers
    )


Endpoint = Callable[[Request], Coroutine[Any, Any, Response]]


class _Api:
    def __init__(self, jobs: JobService, token: str | None, feed: LiveFeed, max_body: int) -> None:
        self.jobs = jobs
        self.token = token.encode() if token else None
        self.feed = feed
        self.max_body = max_body

    # -- plumbing ------------------------------------------------------------------------

    def check_token(self, request: Request) -> None:
        if self.token is None:
            raise ApiError(
                401,
                "Unauthorized",
                "writes are disabled: the server was started without an API token"
                " (set SHARDQ_API_TOKEN)",
            )
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise ApiError(
                401, "Unauthorized", "this is a write: send 'Authorization: Bearer <token>'"
            )
        if not hmac.compare_digest(given.strip().encode(), self.token):
            raise ApiError(401, "Unauthorized", "the bearer token is not valid")

    async def body(self, request: Request, *, required: bool = True) -> Any:
        """The request's JSON body, within the size limit; None when empty and optional."""
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                raise ApiError(400, "Validation", "Content-Length is not a number")
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
                raise ApiError(400, "Validation", "a JSON request body is required")
            return None
        ctype = request.headers.get("content-type", "")
        if ctype.split(";")[0].strip().lower() != "application/json":
            raise ApiError(
                415, "UnsupportedMediaType", "request bodies must be JSON (application/json)"
            )
        try:
            return json.loads(raw, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as e:
            raise ApiError(400, "Validation", f"malformed JSON body: {e}") from None

    def write(self, fn: Endpoint) -> Endpoint:
        async def guarded(request: Request) -> Response:
            self.check_token(request)
            return await fn(request)

        guarded.__name__ = fn.__name__
        return guarded

    # -- jobs ----------------------------------------------------------------------------

    async def submit(self, request: Request) -> Response:
        data = _object(await self.body(request), "the body")
        delay = _number(data.pop("delay", 0), "delay", minimum=0)
        spec = _job_spec(data, "the body")
        [result] = await self.jobs.submit_many([spec], delay=delay)
        if not result.duplicate:
            self.feed.note_submitted([result.job_id])
        return JSONResponse(
            {"id": result.job_id, "duplicate": result.duplicate},
            status_code=200 if result.duplicate else 201,
        )

    async def submit_batch(self, request: Request) -> Response:
        data = _object(await self.body(request), "the body")
        _only(data, {"jobs", "delay"}, "the body")
        delay = _number(data.get("delay", 0), "delay", minimum=0)
        items = data.get("jobs")
        if not isinstance(items, list) or not items:
            raise ApiError(400, "Validation", "'jobs' must be a non-empty array of job objects")
        if len(items) > _MAX_BATCH:
            raise ApiError(400, "Validation", f"a batch holds at most {_MAX_BATCH} jobs")
        specs = [
            _job_spec(_object(item, f"jobs[{i}]"), f"jobs[{i}]") for i, item in enumerate(items)
        ]
        results = await self.jobs.submit_many(specs, delay=delay)
        self.feed.note_submitted([r.job_id for r in results if not r.duplicate])
        return JSONResponse(
            {"jobs": [{"id": r.job_id, "duplicate": r.duplicate} for r in results]},
            status_code=201,
        )

    async def get_job(self, request: Request) -> Response:
        st = await self.jobs.status(_path_id(request, "job_id"))
        return JSONResponse(st.to_dict())

    async def cancel(self, request: Request) -> Response:
        _empty(await self.body(request, required=False))
        job_id = _path_id(request, "job_id")
        await self.jobs.cancel(job_id)
        st = await self.jobs.status(job_id)
        return JSONResponse(st.to_dict(), status_code=202 if st.status != "cancelled" else 200)

    async def list_jobs(self, request: Request) -> Response:
        q = _Query(
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
        return JSONResponse({"jobs": [r.to_dict() for r in rows], "next": nxt})

    # -- dead letters --------------------------------------------------------------------

    async def list_dead_letters(self, request: Request) -> Response:
        q = _Query(request, {"limit", "before"})
        limit = q.integer("limit", 50, 1, 1000)
        rows = await self.jobs.dead_letters(limit=limit, before=q.ident("before"))
        nxt = rows[-1].id if len(rows) == limit else None
        return JSONResponse({"dead_letters": [d.to_dict() for d in rows], "next": nxt})

    async def get_dead_letter(self, request: Request) -> Response:
        d = await self.jobs.dead_letter(_path_id(request, "dlq_id"))
        return JSONResponse(d.to_dict())

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
        _empty(await self.body(request, required=False))
        dlq_id = _path_id(request, "dlq_id")
        job_id = await self._replay_one(dlq_id)
        return JSONResponse({"dlq_id": dlq_id, "job_id": job_id}, status_code=201)

    async def replay_many(self, request: Request) -> Response:
        data = _object(await self.body(request), "the body")
        _only(data, {"ids", "all"}, "the body")
        every = data.get("all", False)
        if not isinstance(every, bool):
            raise ApiError(400, "Validation", "'all' must be true or false")
        ids = data.get("ids")
        if every == (ids is not None):
            raise ApiError(400, "Validation", "give either 'ids' (an array) or 'all': true")
        if ids is not None:
            if (
                not isinstance(ids, list)
                or not ids
                or len(ids) > _MAX_BATCH
                or not all(isinstance(i, str) for i in ids)
            ):
                raise ApiError(
                    400,
                    "Validation",
                    f"'ids' must be a non-empty array of at most {_MAX_BATCH} dead-letter ids",
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
        return JSONResponse({"replayed": replayed, "failed": failed})

    # -- operations ----------------------------------------------------------------------

    async def stats(self, request: Request) -> Response:
        _Query(request, {"series"}).flag("series")
        await self.feed.ensure_started()
        data = self.feed.snapshot()
        if request.query_params.get("series") in ("1", "true"):
            data["series"] = self.feed.series()
        return JSONResponse(data)

    async def runners(self, request: Request) -> Response:
        _Query(request, set())
        jobs = self.jobs
        cfg = jobs.config
        mode = "cluster" if cfg.database_url.startswith("postgres") else "embedded"
        runners: list[dict[str, Any]] = []
        if jobs.runs_jobs:
            metrics = jobs.metrics
            runners.append(
                {
                    "id": jobs.runner_id,
                    "this_process": True,
                    "shards": list(range(cfg.shards)) if mode == "embedded" else None,
                    "shard_count": cfg.shards if mode == "embedded" else None,
                    "concurrency": cfg.concurrency,
                    "running": int(
                        sum(s.value for f in metrics.running.collect() for s in f.samples)
                    ),
                    "handlers": sorted(jobs.handlers),
                }
            )
        return JSONResponse(
            {
                "mode": mode,
                "shards": cfg.shards,
                "runners": runners,
                "note": (
                    "one runner owns every shard of an embedded database"
                    if mode == "embedded"
                    else "shard ownership of other runners is not visible from this process"
                ),
            }
        )

    async def events(self, request: Request) -> Response:
        _Query(request, set())

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
        try:
            _ = self.jobs.driver
        except JobError as e:
            return JSONResponse({"status": "unavailable", "message": str(e)}, status_code=503)
        return JSONResponse(
            {"status": "ok", "runner": self.jobs.runs_jobs, "runner_id": self.jobs.runner_id}
        )

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(build_spec())

    async def dashboard(self, request: Request) -> Response:
        return _static_file("index.html")

    async def asset(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name not in ("app.js", "style.css", "chart.js"):
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
                "Content-Security-Policy": (
                    "default-src 'self'; img-src 'self' data:; style-src 'self';"
                    " script-src 'self'; connect-src 'self'; frame-ancestors 'none'"
                ),
                "X-Content-Type-Options": "nosniff",
            },
        )


def _too_large(limit: int) -> ApiError:
    return ApiError(413, "PayloadTooLarge", f"request body is over the limit of {limit} bytes")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ApiError(400, "Validation", f"{what} must be a JSON object")
    return dict(value)


def _empty(body: Any) -> None:
    if body is not None and body != {}:
        raise ApiError(400, "Validation", "this endpoint takes no body (or an empty object)")


def _only(data: dict[str, Any], allowed: set[str], what: str) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ApiError(
            400,
            "Validation",
            f"unknown field(s) in {what}: {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})",
        )


def _number(value: Any, what: str, *, minimum: float, maximum: float = MAX_SECONDS) -> float:
    if (
        not isinstance(value, int | float)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or not minimum <= value <= maximum
    ):
        raise ApiError(
            400, "Validation", f"'{what}' must be a number within {minimum:g}..{maximum:g}"
        )
    return float(value)


def _job_spec(data: dict[str, Any], what: str) -> JobPayload:
    _only(data, _JOB_FIELDS, what)
    if "type" not in data or "payload" not in data:
        raise ApiError(400, "Validation", f"{what} needs 'type' and 'payload'")

    def text(name: str, required: bool = False) -> str | None:
        v = data.get(name)
        if v is None and not required:
            return None
        if not isinstance(v, str):
            raise ApiError(400, "Validation", f"'{name}' in {what} must be a string")
        return v

    job_type = text("type", required=True)
    priority = data.get("priority", "normal")
    if priority not in PRIORITIES:
        raise ApiError(
            400, "Validation", f"'priority' in {what} must be one of {', '.join(PRIORITIES)}"
        )
    duration = data.get("duration", "short")
    if duration not in DURATIONS:
        raise ApiError(400, "Validation", f"'duration' in {what} must be 'short' or 'long'")
    max_attempts = data.get("max_attempts", 3)
    if not isinstance(max_attempts, int) or isinstance(max_attempts, bool):
        raise ApiError(400, "Validation", f"'max_attempts' in {what} must be an integer")
    timeout = data.get("timeout")
    if timeout is not None:
        timeout = _number(timeout, "timeout", minimum=0)
    return JobPayload(
        type=job_type or "",
        payload=data["payload"],
        priority=priority,
        dedupe_key=text("dedupe_key"),
        max_attempts=max_attempts,
        duration=duration,
        key=text("key"),
        timeout=timeout,
    )


def _is_id(value: str) -> bool:
    return value.isascii() and value.isdigit() and len(value) <= 19 and int(value) < 2**63


def _path_id(request: Request, name: str) -> str:
    value: str = request.path_params[name]
    if not _is_id(value):
        raise ApiError(404, "NotFound", f"no job or dead letter has id {value!r}")
    return value


class _Query:
    """The query parameters of a request, refusing unknown and repeated ones."""

    def __init__(self, request: Request, allowed: set[str]) -> None:
        self.params = request.query_params
        for name in self.params:
            if name not in allowed:
                raise ApiError(400, "Validation", f"unknown query parameter {name!r}")
            if len(self.params.getlist(name)) > 1:
                raise ApiError(400, "Validation", f"query parameter {name!r} is repeated")

    def text(self, name: str) -> str | None:
        v = self.params.get(name)
        return v if v else None

    def flag(self, name: str) -> bool:
        v = self.params.get(name)
        if v is None:
            return False
        if v not in ("0", "1", "true", "false"):
            raise ApiError(400, "Validation", f"'{name}' must be true or false")
        return v in ("1", "true")

    def integer(self, name: str, default: int, lo: int, hi: int) -> int:
        v = self.params.get(name)
        if v is None:
            return default
        if not (v.isascii() and v.isdigit()) or not lo <= int(v) <= hi:
            raise ApiError(400, "Validation", f"'{name}' must be an integer {lo}..{hi}")
        return int(v)

    def choice(self, name: str, options: tuple[str, ...]) -> str | None:
        v = self.params.get(name)
        if v is None or v == "":
            return None
        if v not in options:
            raise ApiError(400, "Validation", f"'{name}' must be one of {', '.join(options)}")
        return v

    def ident(self, name: str) -> str | None:
        v = self.params.get(name)
        if v is None or v == "":
            return None
        if not _is_id(v):
            raise ApiError(400, "Validation", f"'{name}' must be an id (a decimal number)")
        return v

    def time(self, name: str) -> float | None:
        v = self.params.get(name)
        if v is None or v == "":
            return None
        try:
            seconds = float(v)
        except ValueError:
            try:
                parsed = datetime.fromisoformat(v.replace("Z", "+00:00"))
            except ValueError:
                raise ApiError(
                    400,
                    "Validation",
                    f"'{name}' must be Unix seconds or an ISO 8601 time, got {v!r}",
                ) from None
            if parsed.tzinfo is None:
                raise ApiError(400, "Validation", f"'{name}' needs a time zone (e.g. Z)") from None
            seconds = parsed.timestamp()
        if not math.isfinite(seconds) or not 0 <= seconds < 1e11:
            raise ApiError(400, "Validation", f"'{name}' is out of range")
        return seconds


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


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error in %s %s", request.method, request.url.path)
    return error_response(500, "Internal", "unexpected server error (see the server log)")


def create_app(
    jobs: JobService,
    token: str | None,
    *,
    max_body: int = DEFAULT_MAX_BODY,
    feed: LiveFeed | None = None,
) -> ASGIApp:
    """The API, ``/metrics``, ``/healthz``, ``/openapi.json`` and the dashboard of ``jobs``.

    ``token`` is the bearer token every write must carry; with None the API is read-only
    (writes answer 401). ``jobs`` must be started by its owner (the app does not start or
    stop it). The app may be mounted under a prefix in another ASGI application.
    """
    if max_body < 1024:
        raise ValueError("max_body must be at least 1024 bytes")
    live = feed if feed is not None else LiveFeed(jobs)
    api = _Api(jobs, token, live, max_body)
    w = api.write
    routes = [
        Route("/", api.dashboard, methods=["GET"]),
        Route("/static/{name}", api.asset, methods=["GET"]),
        Route("/healthz", api.healthz, methods=["GET"]),
        Route("/metrics", api.metrics, methods=["GET"]),
        Route("/openapi.json", api.openapi, methods=["GET"]),
        Route("/api/jobs", api.list_jobs, methods=["GET"]),
        Route("/api/jobs", w(api.submit), methods=["POST"]),
        Route("/api/jobs/batch", w(api.submit_batch), methods=["POST"]),
        Route("/api/jobs/{job_id}", api.get_job, methods=["GET"]),
        Route("/api/jobs/{job_id}/cancel", w(api.cancel), methods=["POST"]),
        Route("/api/dead-letters", api.list_dead_letters, methods=["GET"]),
        Route("/api/dead-letters/replay", w(api.replay_many), methods=["POST"]),
        Route("/api/dead-letters/{dlq_id}", api.get_dead_letter, methods=["GET"]),
        Route("/api/dead-letters/{dlq_id}/replay", w(api.replay), methods=["POST"]),
        Route("/api/stats", api.stats, methods=["GET"]),
        Route("/api/runners", api.runners, methods=["GET"]),
        Route("/api/events", api.events, methods=["GET"]),
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
        exception_handlers={
            ApiError: _on_api_error,
            JobError: _on_job_error,
            HTTPException: _on_http_error,
            Exception: _on_unexpected,
        },
        lifespan=lifespan,
    )
    app.state.feed = live
    app.state.jobs = jobs
    return app

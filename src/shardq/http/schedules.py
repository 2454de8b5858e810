"""The schedule and pause endpoints of the HTTP API.

``/api/schedules`` lists schedules and adds or changes one; ``/api/schedules/{name}`` removes
one, and its ``/pause`` and ``/resume`` stop and restart its ticks. ``/api/pause`` and
``/api/resume`` hold back (and let go) the jobs of a job type or of a key; ``/api/paused``
says what is paused. Bodies are declared in :mod:`shardq.schema`; every rule is the one
``JobService`` checks, so a refused request changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..jobs import JobService
from ..schema import PauseRequest, ScheduleRequest
from .inputs import Query, invalid, path_name, require_empty
from .wire import JsonResponse

T = TypeVar("T")
Endpoint = Callable[[Request], Coroutine[Any, Any, Response]]


class Bodies(Protocol):
    """How an endpoint reads its request's body (the API's size limit and strict JSON)."""

    async def body(self, request: Request, *, required: bool = True) -> Any:
        """The JSON body; None when empty and not ``required``."""
        ...

    async def decoded(self, request: Request, kind: type[T]) -> T:
        """The JSON body as a ``kind``."""
        ...


def _given(value: T | msgspec.UnsetType) -> T | None:
    return None if isinstance(value, msgspec.UnsetType) else value


class ScheduleEndpoints:
    """The endpoints of schedules and pauses of one ``JobService``."""

    def __init__(self, jobs: JobService, bodies: Bodies) -> None:
        self.jobs = jobs
        self.bodies = bodies

    async def list_schedules(self, request: Request) -> Response:
        Query(request, set())
        return JsonResponse({"schedules": [s.to_dict() for s in await self.jobs.schedules()]})

    async def put_schedule(self, request: Request) -> Response:
        b = await self.bodies.decoded(request, ScheduleRequest)
        try:
            stored = await self.jobs.schedule(
                b.name,
                job_type=b.job_type,
                cron=_given(b.cron),
                every=_given(b.every),
                payload=b.payload,
                tz=b.tz,
                misfire=b.misfire,
                overlap=b.overlap,
                priority=b.priority,
                key=b.key,
            )
        except RecursionError:
            raise invalid("the payload is nested too deeply") from None
        except OverflowError as e:
            raise invalid(f"a number is out of range: {e}") from None
        return JsonResponse(stored.to_dict())

    async def remove_schedule(self, request: Request) -> Response:
        await self.jobs.unschedule(path_name(request, "name"))
        return Response(status_code=204)

    async def pause_schedule(self, request: Request) -> Response:
        return await self._hold_schedule(request, paused=True)

    async def resume_schedule(self, request: Request) -> Response:
        return await self._hold_schedule(request, paused=False)

    async def _hold_schedule(self, request: Request, *, paused: bool) -> Response:
        require_empty(await self.bodies.body(request, required=False))
        name = path_name(request, "name")
        if paused:
            await self.jobs.pause(schedule=name)
        else:
            await self.jobs.resume(schedule=name)
        return JsonResponse({"name": name, "paused": paused})

    async def pause(self, request: Request) -> Response:
        b = await self.bodies.decoded(request, PauseRequest)
        await self.jobs.pause(job_type=_given(b.job_type), key=_given(b.key))
        return await self._paused()

    async def resume(self, request: Request) -> Response:
        b = await self.bodies.decoded(request, PauseRequest)
        await self.jobs.resume(job_type=_given(b.job_type), key=_given(b.key))
        return await self._paused()

    async def paused(self, request: Request) -> Response:
        Query(request, set())
        return await self._paused()

    async def _paused(self) -> Response:
        p = await self.jobs.paused()
        return JsonResponse(
            {"job_types": list(p.job_types), "keys": list(p.keys), "schedules": list(p.schedules)}
        )


def schedule_routes(
    api: ScheduleEndpoints,
    read: Callable[[Endpoint], Endpoint],
    write: Callable[[Endpoint], Endpoint],
) -> list[Route]:
    """The routes of ``api``: reads behind ``read``, writes behind ``write``. A schedule's
    name may hold any character (a slash too, sent as ``%2F``): the last path segment of a
    pause or resume is the action."""
    return [
        Route("/api/schedules", read(api.list_schedules), methods=["GET"]),
        Route("/api/schedules", write(api.put_schedule), methods=["POST"]),
        Route("/api/schedules/{name:path}/pause", write(api.pause_schedule), methods=["POST"]),
        Route("/api/schedules/{name:path}/resume", write(api.resume_schedule), methods=["POST"]),
        Route("/api/schedules/{name:path}", write(api.remove_schedule), methods=["DELETE"]),
        Route("/api/pause", write(api.pause), methods=["POST"]),
        Route("/api/resume", write(api.resume), methods=["POST"]),
        Route("/api/paused", read(api.paused), methods=["GET"]),
    ]

"""The flow-control endpoints of the HTTP API.

``GET /api/limits`` lists every job type with controls: its limits, pause and throttle, and
what it uses now. ``PUT /api/limits/{job_type}`` changes a type's limits: a field of the body
sets that limit, a field given as null removes it, and a field left out stays as it is. The
body is declared in :mod:`shardq.schema` (``LimitRequest``); every rule is the one
``JobService.limit`` checks, so a refused request changes nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..flow import Rate
from ..jobs import JobService
from ..schema import LimitRequest, RateLimit
from .inputs import Query, invalid
from .schedules import Bodies, Endpoint
from .wire import JsonResponse

_FIELDS = ("concurrency", "key_concurrency", "rate", "key_rate")


def _whole(number: float) -> Any:
    # An integral float stands for its int (JSON Schema counts 5.0 as an integer); any other
    # number stays as it is, for the library to refuse.
    return int(number) if isinstance(number, float) and number.is_integer() else number


def _value(given: RateLimit | float | None) -> Any:
    """A field of the body as ``JobService.limit`` takes it."""
    if isinstance(given, RateLimit):
        return Rate(_whole(given.count), given.per, _whole(given.burst))
    return None if given is None else _whole(given)


def changes(body: LimitRequest) -> dict[str, Any]:
    """The limits ``body`` changes, by keyword of ``JobService.limit`` (None removes one)."""
    out = {}
    for name in _FIELDS:
        given = getattr(body, name)
        if not isinstance(given, msgspec.UnsetType):
            out[name] = _value(given)
    if not out:
        raise invalid(
            "give at least one of concurrency, key_concurrency, rate and key_rate"
            " (null removes that limit)"
        )
    return out


class LimitEndpoints:
    """The flow-control endpoints of one ``JobService``."""

    def __init__(self, jobs: JobService, bodies: Bodies) -> None:
        self.jobs = jobs
        self.bodies = bodies

    async def list_limits(self, request: Request) -> Response:
        Query(request, set())
        return JsonResponse({"limits": [lim.to_dict() for lim in await self.jobs.limits()]})

    async def put_limit(self, request: Request) -> Response:
        body = await self.bodies.decoded(request, LimitRequest)
        stored = await self.jobs.limit(request.path_params["job_type"], **changes(body))
        return JsonResponse(stored.to_dict())


def limit_routes(
    api: LimitEndpoints,
    read: Callable[[Endpoint], Endpoint],
    write: Callable[[Endpoint], Endpoint],
) -> list[Route]:
    """The routes of ``api``: reads behind ``read``, writes behind ``write``. A job type may
    hold any character (a slash too, sent as ``%2F``)."""
    put = Route("/api/limits/{job_type:path}", write(api.put_limit), methods=["PUT"])
    # A job type may hold a line break too, which the path convertor's "." does not match.
    put.path_regex = re.compile(put.path_regex.pattern, re.DOTALL)
    return [Route("/api/limits", read(api.list_limits), methods=["GET"]), put]

"""The OpenAPI 3.1 description of the HTTP API: paths, parameters and security written here,
the schemas of every body generated from their declarations in :mod:`shardq.schema`."""

from __future__ import annotations

import copy
from typing import Any

from .. import __version__
from ..models import PRIORITIES, STATUSES
from ..schema import MAX_BATCH, NAME_PATTERN, components
from .inputs import FLAG_VALUES, UNIX_SECONDS_PATTERN

_ID = {"type": "string", "pattern": "^[0-9]{1,19}$", "description": "a decimal Snowflake id"}


def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": props,
        "required": list(props) if required is None else required,
        "additionalProperties": False,
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_STRINGS = (
    "Every string of a request body must be valid Unicode (a lone UTF-16 surrogate is refused)."
)


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int, missing: str = "no such job or dead letter") -> dict[str, Any]:
    texts = {
        400: "invalid input (malformed JSON, wrong types, unknown fields or parameters),"
        " or a host name the server does not answer to",
        401: "missing or invalid bearer token",
        404: missing,
        409: "the job has finished, or the dead letter was already replayed",
        413: "request body over the size limit",
        415: "request body is not JSON",
    }
    return {str(c): _json(_ref("Error"), texts[c]) for c in codes}


_WRITE = (400, 401, 413, 415)
_OPEN: list[dict[str, list[str]]] = []


def _param(name: str, where: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "schema": schema,
        "description": description,
    }


_LIMIT = _param(
    "limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000}, "page size (50)"
)
_INSTANT = {
    "anyOf": [
        {"type": "string", "pattern": UNIX_SECONDS_PATTERN},
        {"type": "string", "format": "date-time"},
    ]
}


def _instant(name: str, what: str) -> dict[str, Any]:
    return _param(
        name,
        "query",
        _INSTANT,
        f"{what}: Unix seconds (a decimal number) or an RFC 3339 date-time with its zone",
    )


def _before(what: str) -> dict[str, Any]:
    return _param("before", "query", _ID, f"{what} id: return the page after it (see 'next')")


_JOB_ID = _param("job_id", "path", _ID, "a job id")
_DLQ_ID = _param("dlq_id", "path", _ID, "a dead-letter id")
_SCHEDULE = _param(
    "name",
    "path",
    {"type": "string", "minLength": 1, "maxLength": 255, "pattern": NAME_PATTERN},
    "a schedule's name (a slash in it is sent as %2F)",
)
_NO_SCHEDULE = "no schedule of that name"
_BODY_OPTIONAL = {
    "required": False,
    "content": {"application/json": {"schema": {"type": "object", "maxProperties": 0}}},
}


def _one_of(body: str, fields: tuple[str, str], description: str) -> dict[str, Any]:
    """A required request body of the type ``body`` that gives exactly one of ``fields``."""
    schema = {"allOf": [_ref(body), {"oneOf": [{"required": [f]} for f in fields]}]}
    return {
        "required": True,
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }


def _hold(verb: str, what: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": f"{verb} the jobs of a job type or of a key",
            "operationId": f"{verb.lower()}Jobs",
            "description": what,
            "requestBody": _one_of("PauseRequest", ("job_type", "key"), "exactly one of them"),
            "responses": {
                "200": _json(_ref("Paused"), "what is paused now"),
                **_errors(*_WRITE),
            },
        }
    }


def _hold_schedule(verb: str, what: str) -> dict[str, Any]:
    return {
        "post": {
            "summary": f"{verb} a schedule",
            "operationId": f"{verb.lower()}Schedule",
            "description": what,
            "parameters": [_SCHEDULE],
            "requestBody": _BODY_OPTIONAL,
            "responses": {
                "200": _json(_ref("SchedulePaused"), "done"),
                **_errors(*_WRITE, 404, missing=_NO_SCHEDULE),
            },
        }
    }


_SCHEDULE_PATHS: dict[str, Any] = {
    "/api/schedules": {
        "get": {
            "summary": "Every schedule: spec, paused, next tick, last tick and its job",
            "operationId": "listSchedules",
            "responses": {
                "200": _json(_ref("Schedules"), "every schedule, by name"),
                **_errors(400, 401),
            },
        },
        "post": {
            "summary": "Add a schedule, or change the one of that name",
            "operationId": "putSchedule",
            "description": (
                "Its owner hears of it at once; a schedule whose timing changed ticks on from"
                " now. An invalid cron expression, an unknown time zone, every <= 0, or both"
                " or neither of cron and every is a 400. " + _STRINGS
            ),
            "requestBody": _one_of("ScheduleRequest", ("cron", "every"), "exactly one of them"),
            "responses": {
                "200": _json(_ref("Schedule"), "the schedule as stored"),
                **_errors(*_WRITE),
            },
        },
    },
    "/api/schedules/{name}": {
        "delete": {
            "summary": "Remove a schedule (the jobs it submitted stay)",
            "operationId": "removeSchedule",
            "parameters": [_SCHEDULE],
            "responses": {
                "204": {"description": "removed"},
                **_errors(400, 401, 404, missing=_NO_SCHEDULE),
            },
        }
    },
    "/api/schedules/{name}/pause": _hold_schedule(
        "Pause", "Its ticks are not fired until it is resumed."
    ),
    "/api/schedules/{name}/resume": _hold_schedule("Resume", "Its ticks are fired again."),
    "/api/pause": _hold(
        "Pause", "Their jobs stay queued, and are not started, until they are resumed."
    ),
    "/api/resume": _hold("Resume", "Their queued jobs start again."),
    "/api/paused": {
        "get": {
            "summary": "What is paused: job types, keys and schedules",
            "operationId": "paused",
            "responses": {"200": _json(_ref("Paused"), "what is paused"), **_errors(400, 401)},
        }
    },
}

_JOB_TYPE = _param(
    "job_type",
    "path",
    {"type": "string", "minLength": 1, "maxLength": 255, "pattern": NAME_PATTERN},
    "a job type (a slash in it is sent as %2F)",
)

_LIMIT_PATHS: dict[str, Any] = {
    "/api/limits": {
        "get": {
            "summary": "Every job type with controls: limits, pause, throttle, use now",
            "operationId": "listLimits",
            "description": (
                "running counts the jobs holding the type's concurrency slots; tokens are the"
                " starts its rate allows at once now (at most burst + 1); throttled_until is"
                " the Unix ms a handler's Throttled holds the type until."
            ),
            "responses": {
                "200": _json(
                    _obj({"limits": {"type": "array", "items": _ref("Limit")}}),
                    "every job type with controls, by type",
                ),
                **_errors(400, 401),
            },
        }
    },
    "/api/limits/{job_type}": {
        "put": {
            "summary": "Change a job type's limits",
            "operationId": "putLimit",
            "description": (
                "A field given sets that limit, a field given as null removes it, and a field"
                " left out stays as it is; every runner applies the change at once. The type"
                " must be known (handled by a runner lately, or limited already): an unknown"
                " type, a limit that is not a positive integer, or a rate with a count below"
                " 1, a period out of range or a negative burst is a 400."
            ),
            "parameters": [_JOB_TYPE],
            "requestBody": {
                "required": True,
                "description": "at least one field",
                "content": {
                    "application/json": {
                        "schema": {"allOf": [_ref("LimitRequest"), {"minProperties": 1}]}
                    }
                },
            },
            "responses": {
                "200": _json(_ref("Limit"), "the type's controls now"),
                **_errors(*_WRITE),
            },
        }
    },
}

_PATHS: dict[str, Any] = {
    "/healthz": {
        "get": {
            "summary": "Health: storage open and the runner's writes succeeding",
            "description": "Open: no token, and any host name.",
            "operationId": "healthz",
            "security": _OPEN,
            "responses": {
                "200": _json(_ref("Health"), "up"),
                "503": _json(
                    _ref("Health"), "failing: not started, or the runner's steps keep failing"
                ),
            },
        }
    },
    "/metrics": {
        "get": {
            "summary": "Prometheus metrics of this process",
            "description": "Takes the API token or, when one is configured, the metrics token.",
            "operationId": "metrics",
            "responses": {
                "200": {
                    "description": "Prometheus text format",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                **_errors(400, 401),
            },
        }
    },
    "/api/jobs": {
        "get": {
            "summary": "List jobs, newest first, filtered and paged",
            "operationId": "listJobs",
            "parameters": [
                _param("status", "query", {"enum": list(STATUSES)}, "only this status"),
                _param("type", "query", {"type": "string"}, "only this job type"),
                _param("priority", "query", {"enum": list(PRIORITIES)}, "only this priority"),
                _param("key", "query", {"type": "string"}, "only this ordering key"),
                _instant("since", "created at or after"),
                _instant("until", "created before"),
                _LIMIT,
                _before("job"),
            ],
            "responses": {"200": _json(_ref("JobPage"), "a page of jobs"), **_errors(400, 401)},
        },
        "post": {
            "summary": "Submit one job (committed when this returns)",
            "operationId": "submitJob",
            "description": _STRINGS,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("SubmitRequest")}},
            },
            "responses": {
                "201": _json(_ref("Submitted"), "stored"),
                "200": _json(_ref("Submitted"), "a retained job had this dedupe_key"),
                **_errors(*_WRITE),
            },
        },
    },
    "/api/jobs/batch": {
        "post": {
            "summary": "Submit a batch of jobs in one transaction (all or none)",
            "operationId": "submitBatch",
            "description": _STRINGS,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref("BatchRequest")}},
            },
            "responses": {
                "201": _json(_ref("BatchSubmitted"), "stored, in request order"),
                **_errors(*_WRITE),
            },
        }
    },
    "/api/jobs/{job_id}": {
        "get": {
            "summary": "A job: status, attempts, history and result",
            "operationId": "getJob",
            "parameters": [_JOB_ID],
            "responses": {"200": _json(_ref("Job"), "the job"), **_errors(400, 401, 404)},
        }
    },
    "/api/jobs/{job_id}/cancel": {
        "post": {
            "summary": "Cancel a job: a queued one never runs, a running one is interrupted",
            "operationId": "cancelJob",
            "parameters": [_JOB_ID],
            "requestBody": _BODY_OPTIONAL,
            "responses": {
                "200": _json(_ref("Job"), "cancelled"),
                "202": _json(_ref("Job"), "running: its runner was told to stop it"),
                **_errors(*_WRITE, 404, 409),
            },
        }
    },
    "/api/dead-letters": {
        "get": {
            "summary": "Dead letters, newest first",
            "operationId": "listDeadLetters",
            "parameters": [_LIMIT, _before("dead-letter")],
            "responses": {
                "200": _json(_ref("DeadLetterPage"), "a page of dead letters"),
                **_errors(400, 401),
            },
        }
    },
    "/api/dead-letters/replay": {
        "post": {
            "summary": "Replay several dead letters, or all not yet replayed",
            "operationId": "replayMany",
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "oneOf": [
                                _obj(
                                    {
                                        "ids": {
                                            "type": "array",
                                            "items": _ID,
                                            "minItems": 1,
                                            "maxItems": MAX_BATCH,
                                        }
                                    }
                                ),
                                _obj({"all": {"const": True}}),
                            ]
                        }
                    }
                },
            },
            "responses": {
                "200": _json(_ref("ReplayMany"), "what was replayed and what was not"),
                **_errors(*_WRITE),
            },
        }
    },
    "/api/dead-letters/{dlq_id}": {
        "get": {
            "summary": "One dead letter with its payload",
            "operationId": "getDeadLetter",
            "parameters": [_DLQ_ID],
            "responses": {
                "200": _json(_ref("DeadLetter"), "the dead letter"),
                **_errors(400, 401, 404),
            },
        }
    },
    "/api/dead-letters/{dlq_id}/replay": {
        "post": {
            "summary": "Submit a dead letter's job again and mark it replayed",
            "operationId": "replayDeadLetter",
            "parameters": [_DLQ_ID],
            "requestBody": _BODY_OPTIONAL,
            "responses": {
                "201": _json(_ref("Replayed"), "the new job"),
                **_errors(*_WRITE, 404, 409),
            },
        }
    },
    "/api/stats": {
        "get": {
            "summary": "Counts by status and priority, throughput and latency percentiles",
            "operationId": "stats",
            "parameters": [
                _param("series", "query", {"enum": list(FLAG_VALUES)}, "include the samples")
            ],
            "responses": {"200": _json(_ref("Stats"), "live numbers"), **_errors(400, 401)},
        }
    },
    "/api/runners": {
        "get": {
            "summary": "The whole cluster: runners, shard map, hand-overs, membership events",
            "operationId": "runners",
            "responses": {"200": _json(_ref("Runners"), "runners"), **_errors(400, 401)},
        }
    },
    "/api/events": {
        "get": {
            "summary": "Live updates as server-sent events (hello, jobs, tick)",
            "operationId": "events",
            "responses": {
                "200": {
                    "description": "an endless text/event-stream",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                **_errors(400, 401),
            },
        }
    },
}


def build_spec() -> dict[str, Any]:
    """The OpenAPI document (a fresh copy each call)."""
    return copy.deepcopy(
        {
            "openapi": "3.1.0",
            "info": {
                "title": "shardq",
                "version": __version__,
                "description": (
                    "Submit, inspect, cancel and replay jobs; manage schedules; pause and"
                    " resume job types, keys and schedules; set job types' limits. Every operation but /healthz"
                    " needs 'Authorization: Bearer <SHARDQ_API_TOKEN>' (/metrics also takes"
                    " the metrics token), and only configured host names are served. Bodies"
                    " are JSON only: UTF-8, no repeated keys, no NaN or Infinity."
                    ' Every error is {"error": {"reason": ..., "message": ...}}.'
                ),
            },
            "paths": {**_PATHS, **_SCHEDULE_PATHS, **_LIMIT_PATHS},
            "security": [{"bearer": []}],
            "components": {
                "schemas": components(),
                "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            },
        }
    )

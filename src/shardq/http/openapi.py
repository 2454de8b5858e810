"""The OpenAPI 3.1 description of the HTTP API, written by hand to match its responses."""

from __future__ import annotations

import copy
from typing import Any

from .. import __version__
from ..jobs import MAX_SECONDS
from ..models import DURATIONS, PRIORITIES, STATUSES
from .inputs import (
    FLAG_VALUES,
    MAX_ATTEMPTS,
    MAX_BATCH,
    MAX_NAME,
    NAME_PATTERN,
    UNIX_SECONDS_PATTERN,
)

_ID = {"type": "string", "pattern": "^[0-9]{1,19}$", "description": "a decimal Snowflake id"}
_ANY: dict[str, Any] = {"description": "any JSON value"}
_MAX_S = int(MAX_SECONDS)  # ten years, in seconds: the bound of delay and timeout


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    out = dict(schema)
    out["type"] = [schema["type"], "null"]
    return out


def _obj(props: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": props,
        "required": list(props) if required is None else required,
        "additionalProperties": False,
    }


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_TIME = {"type": "string", "format": "date-time"}
_COUNTS = {
    "by_status": _obj({s: {"type": "integer", "minimum": 0} for s in STATUSES}),
    "queued_by_priority": _obj({p: {"type": "integer", "minimum": 0} for p in PRIORITIES}),
    "dead_letters": {"type": "integer", "minimum": 0},
}
_MS = {"type": ["number", "null"]}

_NAME = {
    "type": "string",
    "minLength": 1,
    "maxLength": MAX_NAME,
    "pattern": NAME_PATTERN,
    "description": "not only white space",
}
_STRINGS = (
    "Every string of a request body must be valid Unicode (a lone UTF-16 surrogate is refused)."
)
_ERROR_BODY = _obj(
    {
        "reason": {
            "type": "string",
            "description": "NotFound, Validation, Unauthorized, BadHost, AlreadyCancelled,"
            " AlreadyReplayed, PayloadTooLarge, UnsupportedMediaType, …",
        },
        "message": {"type": "string"},
    }
)

_SCHEMAS: dict[str, Any] = {
    "Error": _obj({"error": _ERROR_BODY}),
    "HistoryEntry": _obj(
        {
            "status": {"enum": list(STATUSES)},
            "timestamp": _TIME,
            "error": {"type": "string"},
        },
        required=["status", "timestamp"],
    ),
    "Job": _obj(
        {
            "id": _ID,
            "status": {"enum": list(STATUSES)},
            "attempts": {"type": "integer", "minimum": 0},
            "history": {"type": "array", "items": _ref("HistoryEntry")},
            "result": _ANY,
            "error": {"type": ["string", "null"]},
            "created_at": _nullable(_TIME),
            "run_at": _nullable(_TIME),
            "finished_at": _nullable(_TIME),
            "type": {"type": "string"},
            "payload": _ANY,
            "priority": {"enum": list(PRIORITIES)},
            "dedupe_key": {"type": ["string", "null"]},
            "max_attempts": {"type": "integer"},
            "duration": {"enum": list(DURATIONS)},
            "batch_id": {"type": ["string", "null"]},
            "key": {"type": ["string", "null"]},
            "timeout": {"type": ["number", "null"]},
        }
    ),
    "NewJob": _obj(
        {
            "type": _NAME,
            "payload": {
                **_ANY,
                "description": "the handler's argument (any JSON, within the service's size"
                " and nesting limits; a refused payload is a 400)",
            },
            "priority": {"enum": list(PRIORITIES), "default": "normal"},
            "key": {
                **_nullable(_NAME),
                "description": "jobs sharing a key run one at a time, in submit order",
            },
            "dedupe_key": {
                **_nullable(_NAME),
                "description": "a retained job with this key is returned instead",
            },
            "max_attempts": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_ATTEMPTS,
                "default": 3,
            },
            "timeout": {"type": ["number", "null"], "exclusiveMinimum": 0, "maximum": _MAX_S},
            "duration": {"enum": list(DURATIONS), "default": "short"},
        },
        required=["type", "payload"],
    ),
    "Submitted": _obj({"id": _ID, "duplicate": {"type": "boolean"}}),
    "JobPage": _obj(
        {
            "jobs": {"type": "array", "items": _ref("Job")},
            "next": {**_nullable({"type": "string"}), "description": "pass as 'before'"},
        }
    ),
    "DeadLetter": _obj(
        {
            "id": _ID,
            "job_id": _ID,
            "type": {"type": "string"},
            "payload": _ANY,
            "priority": {"enum": list(PRIORITIES)},
            "reason": {"type": "string"},
            "error": {"type": ["string", "null"]},
            "attempts": {"type": "integer"},
            "created_at": _TIME,
            "failed_at": _TIME,
            "replayed_at": _nullable(_TIME),
            "replay_job_id": {"type": ["string", "null"]},
            "key": {"type": ["string", "null"]},
        }
    ),
    "DeadLetterPage": _obj(
        {
            "dead_letters": {"type": "array", "items": _ref("DeadLetter")},
            "next": _nullable({"type": "string"}),
        }
    ),
    "Replayed": _obj({"dlq_id": _ID, "job_id": _ID}),
    "ReplayMany": _obj(
        {
            "replayed": {"type": "array", "items": _ref("Replayed")},
            "failed": {
                "type": "array",
                "items": _obj({"dlq_id": {"type": "string"}, "error": _ERROR_BODY}),
            },
        }
    ),
    "Point": _obj(
        {
            "t": {"type": "number", "description": "Unix seconds"},
            "completed_per_s": {"type": "number"},
            "failed_per_s": {"type": "number"},
            "submitted_per_s": {"type": "number"},
            "started_per_s": {"type": "number"},
            "latency_p50_ms": _MS,
            "latency_p99_ms": _MS,
            "run_p50_ms": _MS,
        }
    ),
    "Stats": _obj(
        {
            "time": {"type": "number"},
            "source": {
                "enum": ["runner", "database"],
                "description": "runner: live counters of this process; database: read-only",
            },
            **_COUNTS,
            "throughput": _obj(
                {
                    "completed_per_s": {"type": "number"},
                    "failed_per_s": {"type": "number"},
                    "submitted_per_s": {"type": "number"},
                    "completed_per_s_1m": {"type": "number"},
                }
            ),
            "latency_ms": _obj(
                {
                    "start_count": {"type": "integer"},
                    "start_p50_ms": _MS,
                    "start_p95_ms": _MS,
                    "start_p99_ms": _MS,
                    "run_p50_ms": _MS,
                    "run_p95_ms": _MS,
                    "run_p99_ms": _MS,
                }
            ),
            "interval_s": {"type": "number"},
            "series": {"type": "array", "items": _ref("Point")},
        },
        required=[
            "time",
            "source",
            "by_status",
            "queued_by_priority",
            "dead_letters",
            "throughput",
            "latency_ms",
            "interval_s",
        ],
    ),
    "Runners": _obj(
        {
            "mode": {"enum": ["embedded", "cluster"]},
            "shards": {"type": "integer"},
            "runners": {
                "type": "array",
                "items": _obj(
                    {
                        "id": {"type": "string"},
                        "this_process": {"type": "boolean"},
                        "shards": {
                            "type": ["array", "null"],
                            "items": {"type": "integer"},
                        },
                        "shard_count": {"type": ["integer", "null"]},
                        "concurrency": {"type": "integer"},
                        "running": {"type": "integer"},
                        "handlers": {"type": "array", "items": {"type": "string"}},
                    }
                ),
            },
            "note": {"type": "string"},
        }
    ),
    "Health": _obj(
        {
            "status": {"enum": ["ok", "failing"]},
            "runner": {"type": "boolean"},
            "runner_id": {"type": "string"},
            "message": {"type": "string"},
        },
        required=["status"],
    ),
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    texts = {
        400: "invalid input (malformed JSON, wrong types, unknown fields or parameters),"
        " or a host name the server does not answer to",
        401: "missing or invalid bearer token",
        404: "no such job or dead letter",
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
_BODY_OPTIONAL = {
    "required": False,
    "content": {"application/json": {"schema": {"type": "object", "maxProperties": 0}}},
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
                "content": {
                    "application/json": {
                        "schema": {
                            **_SCHEMAS["NewJob"],
                            "properties": {
                                **_SCHEMAS["NewJob"]["properties"],
                                "delay": {
                                    "type": "number",
                                    "minimum": 0,
                                    "maximum": _MAX_S,
                                    "description": "seconds before the job may run",
                                },
                            },
                        }
                    }
                },
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
                "content": {
                    "application/json": {
                        "schema": _obj(
                            {
                                "jobs": {
                                    "type": "array",
                                    "items": _ref("NewJob"),
                                    "minItems": 1,
                                    "maxItems": MAX_BATCH,
                                },
                                "delay": {"type": "number", "minimum": 0, "maximum": _MAX_S},
                            },
                            required=["jobs"],
                        )
                    }
                },
            },
            "responses": {
                "201": _json(
                    _obj({"jobs": {"type": "array", "items": _ref("Submitted")}}),
                    "stored, in request order",
                ),
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
            "summary": "Runners and the shards they own",
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
                    "Submit, inspect, cancel and replay jobs. Every operation but /healthz"
                    " needs 'Authorization: Bearer <SHARDQ_API_TOKEN>' (/metrics also takes"
                    " the metrics token), and only configured host names are served. Bodies"
                    " are JSON only: UTF-8, no repeated keys, no NaN or Infinity."
                    ' Every error is {"error": {"reason": ..., "message": ...}}.'
                ),
            },
            "paths": _PATHS,
            "security": [{"bearer": []}],
            "components": {
                "schemas": _SCHEMAS,
                "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            },
        }
    )

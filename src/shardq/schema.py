"""What crosses the HTTP API, declared once: every request and response body.

Request bodies are decoded straight into these types (msgspec), and the OpenAPI components
are generated from them (:func:`components`). A type states the wire format (JSON types,
required and unknown fields, enumerations) and is checked while decoding. The domain's rules
(a name's length and text, the range of a number, a payload's depth) are stated in the schema
from the constants of the one check every entry point goes through, ``JobService``'s; they
are not checked a second time here.

:func:`decode_json` is the strict JSON reader of the API and the command line.
"""

from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any, Literal, TypeVar

import msgspec

from ._internal.validation import MAX_ATTEMPTS, MAX_NAME, MAX_SECONDS
from .models import Duration, HistoryStatus, JobPayload, Priority, Status
from .schedules import Misfire, Overlap

__all__ = [
    "MAX_BATCH",
    "NAME_PATTERN",
    "BadJson",
    "BatchRequest",
    "LimitRequest",
    "NewJob",
    "PauseRequest",
    "ScheduleRequest",
    "SubmitRequest",
    "WrongShape",
    "components",
    "decode",
    "decode_json",
]

#: Most jobs (and dead-letter ids) one request may carry.
MAX_BATCH = 1000
#: The characters Python's ``str.strip`` removes: a name of only these is empty.
_SPACE = (
    "\\t\\n\\u000b\\u000c\\r\\u001c-\\u0020\\u0085\\u00a0\\u1680\\u2000-\\u200a"
    "\\u2028\\u2029\\u202f\\u205f\\u3000"
)
#: A name holds one character that is not white space and no NUL; the same regular
#: expression in Python and in ECMA 262 (JSON Schema's dialect).
NAME_PATTERN = f"^[^\\u0000]*[^{_SPACE}\\u0000][^\\u0000]*$"
_MAX_S = int(MAX_SECONDS)

T = TypeVar("T")


def _rule(description: str, **schema: Any) -> msgspec.Meta:
    # Stated in the schema, checked by the domain (see the module's docstring).
    return msgspec.Meta(description=description, extra_json_schema=schema)


Name = Annotated[
    str,
    _rule(
        "not only white space, no NUL, valid Unicode",
        minLength=1,
        maxLength=MAX_NAME,
        pattern=NAME_PATTERN,
    ),
]
_MAX_ATTEMPTS = _rule(
    "attempts before dead-letter, else the default", type="integer", minimum=1, maximum=MAX_ATTEMPTS
)
Id = Annotated[str, msgspec.Meta(pattern="^[0-9]{1,19}$", description="a decimal Snowflake id")]
Time = Annotated[str, msgspec.Meta(extra_json_schema={"format": "date-time"})]
Count = Annotated[int, msgspec.Meta(ge=0)]
Millis = float | None

# -- requests ----------------------------------------------------------------------------


class NewJob(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A job to submit."""

    type: Name
    payload: Annotated[
        Any,
        msgspec.Meta(
            description="the handler's argument (any JSON, within the service's size and"
            " nesting limits; a refused payload is a 400)"
        ),
    ]
    priority: Priority = "normal"
    key: (
        Annotated[Name, msgspec.Meta(description="jobs sharing a key run one at a time")] | None
    ) = None
    dedupe_key: (
        Annotated[Name, msgspec.Meta(description="a retained job with this key is returned")] | None
    ) = None
    # A JSON number without a fraction is an integer (1000.0 too, as JSON Schema counts).
    max_attempts: Annotated[int | float, _MAX_ATTEMPTS] | None = None
    timeout: (
        Annotated[float, _rule("seconds each attempt may take", exclusiveMinimum=0, maximum=_MAX_S)]
        | None
    ) = None
    duration: Duration = "short"

    def spec(self) -> JobPayload:
        """The job as ``JobService`` takes it (which checks it)."""
        return JobPayload(
            type=self.type,
            payload=self.payload,
            priority=self.priority,
            dedupe_key=self.dedupe_key,
            max_attempts=None if self.max_attempts is None else _integral(self.max_attempts),
            duration=self.duration,
            key=self.key,
            timeout=self.timeout,
        )


def _integral(number: float) -> Any:
    # An integral float becomes the int it stands for; any other stays as it is, for the
    # domain check to refuse.
    return int(number) if isinstance(number, float) and number.is_integer() else number


Delay = Annotated[float, _rule("seconds before the job may run", minimum=0, maximum=_MAX_S)]


class SubmitRequest(NewJob, forbid_unknown_fields=True, kw_only=True):
    """One job to submit, and when it may run."""

    delay: Delay = 0.0


class BatchRequest(msgspec.Struct, forbid_unknown_fields=True):
    """Jobs to submit in one transaction (all or none)."""

    jobs: Annotated[list[NewJob], msgspec.Meta(min_length=1, max_length=MAX_BATCH)]
    delay: Delay = 0.0


class ScheduleRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A schedule to add, or the new version of the schedule of that name: exactly one of
    ``cron`` and ``every``."""

    name: Name
    job_type: Name
    cron: (
        Annotated[str, msgspec.Meta(description="5 fields, or 6 with seconds first")]
        | msgspec.UnsetType
    ) = msgspec.UNSET
    every: (
        Annotated[
            float,
            _rule(
                "seconds between ticks (a whole number of milliseconds once rounded); ticks"
                " fall on its multiples since the Unix epoch",
                exclusiveMinimum=0.0005,
                maximum=_MAX_S,
            ),
        ]
        | msgspec.UnsetType
    ) = msgspec.UNSET
    payload: Annotated[
        Any, msgspec.Meta(description="the payload of each tick's job (default {})")
    ] = None
    tz: Annotated[
        str, msgspec.Meta(description="the IANA time zone whose wall clock cron is read on")
    ] = "UTC"
    misfire: Misfire = "latest"
    overlap: Overlap = "allow"
    priority: Priority = "normal"
    key: Name | None = None


class PauseRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What to pause or resume: a job type or a key (exactly one)."""

    job_type: Name | msgspec.UnsetType = msgspec.UNSET
    key: Name | msgspec.UnsetType = msgspec.UNSET


#: The bounds shardq.flow checks; a JSON number without a fraction is an integer (5.0 too).
_WHOLE: dict[str, Any] = {"type": "integer", "maximum": 1_000_000}
Slots = Annotated[int | float, _rule("a positive integer", minimum=1, **_WHOLE)]


class RateLimit(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """``count`` starts per ``per`` seconds, and up to ``burst`` more after a quiet spell."""

    count: Slots
    per: Annotated[float, _rule("the period in seconds", minimum=0.001, maximum=86_400)] = 1.0
    burst: Annotated[int | float, _rule("extra starts at once", minimum=0, **_WHOLE)] = 0


class LimitRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A job type's limits to change: null removes one, one left out stays as it is."""

    concurrency: Slots | msgspec.UnsetType | None = msgspec.UNSET
    key_concurrency: Slots | msgspec.UnsetType | None = msgspec.UNSET
    rate: RateLimit | msgspec.UnsetType | None = msgspec.UNSET
    key_rate: RateLimit | msgspec.UnsetType | None = msgspec.UNSET


# -- responses ---------------------------------------------------------------------------


class _Body(msgspec.Struct, forbid_unknown_fields=True):
    """A response body: the schema allows no field it does not declare."""


class Submitted(_Body):
    """A stored job's id, or the id of the retained job that had its dedupe key."""

    id: Id
    duplicate: bool


class BatchSubmitted(_Body):
    """The jobs of a batch, in request order."""

    jobs: list[Submitted]


class HistoryEntry(_Body, omit_defaults=True):
    """A state a job entered, when, and the error that made it."""

    status: HistoryStatus
    timestamp: Time
    error: str | None = None


class Job(_Body):
    """A job: status, attempts, history, result and what was submitted."""

    id: Id
    status: Status
    attempts: Count
    history: list[HistoryEntry]
    result: Annotated[Any, msgspec.Meta(description="any JSON value")]
    error: str | None
    created_at: Time | None
    run_at: Time | None
    finished_at: Time | None
    type: str
    payload: Annotated[Any, msgspec.Meta(description="any JSON value")]
    priority: Priority
    dedupe_key: str | None
    max_attempts: int
    duration: Duration
    batch_id: str | None
    key: str | None
    timeout: float | None
    schedule: Annotated[
        str | None, msgspec.Meta(description="the schedule that submitted it, if one did")
    ] = None
    tick: Annotated[Time | None, msgspec.Meta(description="the schedule's tick it is for")] = None
    waiting: Annotated[
        str | None,
        msgspec.Meta(
            description="why a queued job that is due does not start (paused, throttled,"
            " waiting for a slot or for its rate), if it is held back"
        ),
    ] = None


class JobPage(_Body):
    """A page of jobs, newest first."""

    jobs: list[Job]
    next: Annotated[str | None, msgspec.Meta(description="pass as 'before'")]


class DeadLetter(_Body):
    """A job that failed for good."""

    id: Id
    job_id: Id
    type: str
    payload: Annotated[Any, msgspec.Meta(description="any JSON value")]
    priority: Priority
    reason: str
    error: str | None
    attempts: int
    created_at: Time
    failed_at: Time
    replayed_at: Time | None
    replay_job_id: str | None
    key: str | None


class DeadLetterPage(_Body):
    """A page of dead letters, newest first."""

    dead_letters: list[DeadLetter]
    next: str | None


class ErrorBody(_Body):
    """Why a request was refused."""

    reason: Annotated[
        str,
        msgspec.Meta(
            description="NotFound, Validation, Unauthorized, BadHost, AlreadyCancelled,"
            " AlreadyReplayed, PayloadTooLarge, UnsupportedMediaType, …"
        ),
    ]
    message: str


class Error(_Body):
    """The one shape of every error."""

    error: ErrorBody


class Replayed(_Body):
    """A replayed dead letter and its new job."""

    dlq_id: Id
    job_id: Id


class NotReplayed(_Body):
    """A dead letter that was not replayed, and why."""

    dlq_id: str
    error: ErrorBody


class ReplayMany(_Body):
    """What was replayed and what was not."""

    replayed: list[Replayed]
    failed: list[NotReplayed]


class StatusCounts(_Body):
    """Jobs by status."""

    queued: Count
    processing: Count
    complete: Count
    failed: Count
    cancelled: Count


class PriorityCounts(_Body):
    """Queued jobs by priority."""

    critical: Count
    high: Count
    normal: Count
    low: Count


class Point(_Body):
    """One sample of the live numbers."""

    t: Annotated[float, msgspec.Meta(description="Unix seconds")]
    completed_per_s: float
    failed_per_s: float
    submitted_per_s: float
    started_per_s: float
    latency_p50_ms: Millis
    latency_p99_ms: Millis
    run_p50_ms: Millis


class Throughput(_Body):
    """Jobs per second, of the last sample and of the last minute."""

    completed_per_s: float
    failed_per_s: float
    submitted_per_s: float
    completed_per_s_1m: float


class Latency(_Body):
    """Submit-to-start and run-time percentiles, in milliseconds."""

    start_count: int
    start_p50_ms: Millis
    start_p95_ms: Millis
    start_p99_ms: Millis
    run_p50_ms: Millis
    run_p95_ms: Millis
    run_p99_ms: Millis


class Stats(_Body, omit_defaults=True):
    """Counts, throughput and latency percentiles (and the samples, when asked)."""

    time: float
    source: Annotated[
        Literal["runner", "database"],
        msgspec.Meta(description="runner: live counters of this process; database: read-only"),
    ]
    by_status: StatusCounts
    queued_by_priority: PriorityCounts
    dead_letters: Count
    throughput: Throughput
    latency_ms: Latency
    interval_s: float
    series: list[Point] | None = None


class RunnerInfo(_Body):
    """A live runner of the cluster: where it runs, its shards and the load its heartbeat
    published."""

    id: str
    host: str
    pid: int
    started_at: Time
    heartbeat_at: Time
    shards: list[int]
    shard_count: Count
    running: Annotated[int, msgspec.Meta(ge=0, description="handlers running now")]
    capacity: Annotated[int, msgspec.Meta(ge=0, description="its concurrency")]
    jobs_per_s: Annotated[
        float, msgspec.Meta(description="jobs it finished per second, at its last heartbeat")
    ]
    draining: Annotated[
        bool, msgspec.Meta(description="asked to hand its shards over: it owns none")
    ]
    this_process: bool
    handlers: Annotated[
        list[str] | None, msgspec.Meta(description="its job types (known for this process)")
    ]


class Handover(_Body):
    """A shard moving between runners (from: still finishing its running jobs, or null)."""

    shard: int
    from_runner: str | None
    to_runner: str | None


class MembershipEvent(_Body):
    """A runner joined, left, was found gone (its session ended) or was asked to drain."""

    at: Time
    runner: str
    kind: Literal["joined", "left", "gone", "drain"]
    host: str
    pid: int


class Runners(_Body):
    """The whole cluster, the same from every process: runners, the owner of each shard
    (null while it is handed over), hand-overs in progress and recent membership events."""

    mode: Literal["embedded", "cluster"]
    shards: int
    at: Time
    this_runner: str | None
    runners: list[RunnerInfo]
    shard_map: list[str | None]
    handovers: list[Handover]
    events: list[MembershipEvent]
    note: str


class Schedule(_Body):
    """A stored schedule: its spec, whether it is paused or declared in code, and its
    ticks (the first not yet handled, and the last that submitted a job)."""

    name: str
    job_type: str
    cron: str | None
    every: Annotated[float | None, msgspec.Meta(description="seconds between ticks")]
    tz: str
    payload: Annotated[Any, msgspec.Meta(description="any JSON value")]
    priority: Priority
    misfire: Misfire
    overlap: Overlap
    key: str | None
    paused: bool
    declared: Annotated[bool, msgspec.Meta(description="declared in code (@jobs.cron/every)")]
    next_tick: Time | None
    last_tick: Time | None
    last_job_id: Annotated[str | None, msgspec.Meta(description="the job of last_tick")]


class Schedules(_Body):
    """Every schedule, by name."""

    schedules: list[Schedule]


class SchedulePaused(_Body):
    """A schedule and whether it is paused now."""

    name: str
    paused: bool


class Paused(_Body):
    """What is paused: job types and keys (their jobs wait, queued) and schedules (their
    ticks are not fired)."""

    job_types: list[str]
    keys: list[str]
    schedules: list[str]


class Limit(_Body):
    """A job type's limits, pause and throttle, and what it uses now."""

    job_type: str
    concurrency: int | None
    key_concurrency: int | None
    rate: RateLimit | None
    key_rate: RateLimit | None
    paused: bool
    throttled_until: Annotated[int | None, msgspec.Meta(description="Unix ms, if throttled")]
    running: Annotated[int, msgspec.Meta(ge=0, description="jobs holding its slots now")]
    tokens: Annotated[float | None, msgspec.Meta(description="starts its rate allows now")]


class Health(_Body, omit_defaults=True):
    """Whether the service can do its work."""

    status: Literal["ok", "failing"]
    runner: bool | None = None
    runner_id: str | None = None
    message: str | None = None


#: Every type of the API's bodies, as named in the OpenAPI document.
BODIES: tuple[type[msgspec.Struct], ...] = (
    NewJob,
    SubmitRequest,
    BatchRequest,
    Submitted,
    BatchSubmitted,
    Job,
    JobPage,
    DeadLetter,
    DeadLetterPage,
    Replayed,
    ReplayMany,
    Stats,
    Runners,
    ScheduleRequest,
    PauseRequest,
    Schedules,
    Schedule,
    SchedulePaused,
    Paused,
    LimitRequest,
    Limit,
    Health,
    Error,
)


def components(ref_template: str = "#/components/schemas/{name}") -> dict[str, Any]:
    """The JSON Schemas of :data:`BODIES` and of the types inside them, by name."""
    _, schemas = msgspec.json.schema_components(BODIES, ref_template=ref_template)
    return schemas


# -- decoding ----------------------------------------------------------------------------


class BadJson(ValueError):
    """Bytes that are not acceptable JSON; the message says why."""


class WrongShape(ValueError):
    """JSON of the wrong shape for its request: the message names the field."""


_DECODE = msgspec.json.Decoder()
_ENCODE = msgspec.json.Encoder()


def decode_json(raw: bytes) -> Any:
    """The JSON value of ``raw``, read strictly: UTF-8 only, no repeated key in an object, no
    NaN or Infinity (nor a number that overflows to one), no lone UTF-16 surrogate, and no
    nesting deeper than the parser goes; anything else is :class:`BadJson`."""
    try:
        value = _DECODE.decode(raw)
    except RecursionError:
        raise BadJson("the JSON is nested too deeply") from None
    except msgspec.DecodeError as e:
        _read_slowly(raw)  # raises, saying exactly what is wrong, in most cases
        raise BadJson(f"not valid JSON: {e}") from None
    # A repeated key is dropped while decoding, and so is the colon after it: every other
    # colon of the text (after a key, or inside a string) is written again by the encoder.
    # Only "\u003a", a colon spelled as an escape, would upset the count: then read slowly.
    if raw.count(b":") != _ENCODE.encode(value).count(b":") or b"\\u003" in raw:
        return _read_slowly(raw)
    return value


def decode(raw: bytes, kind: type[T]) -> T:
    """``raw`` (strict JSON, see :func:`decode_json`) as a ``kind``; :class:`WrongShape`
    naming the field when it is of the wrong shape."""
    value = decode_json(raw)
    try:
        return msgspec.convert(value, kind)
    except msgspec.ValidationError as e:
        raise WrongShape(_where(str(e))) from None


_AT = re.compile(r"^(.*) - at `\$(.*)`$")
_PHRASES = [
    (re.compile(r"Object missing required field `(.*)`"), "{place} needs the field '{0}'"),
    (re.compile(r"Object contains unknown field `(.*)`"), "unknown field '{0}' in {place}"),
    (re.compile(r"Expected `object`, got `(.*)`"), "{place} must be a JSON object, not {0}"),
    (re.compile(r"Expected `(.*)`, got `(.*)`"), "{place} must be {0}, not {1}"),
    (re.compile(r"Invalid enum value (.*)"), "{place} may not be {0}"),
]


def _where(message: str) -> str:
    """msgspec's "Expected `int`, got `str` - at `$.jobs[1].key`" as "'jobs[1].key' must
    be int, not str": the field named as the body spells it."""
    m = _AT.match(message)
    text, path = m.groups() if m else (message, "")
    place = f"'{path.lstrip('.')}'" if path else "the body"
    for pattern, phrase in _PHRASES:
        found = pattern.fullmatch(text)
        if found:
            return phrase.format(*found.groups(), place=place)
    return f"{place}: {text}"


def _read_slowly(raw: bytes) -> Any:
    """The value of ``raw`` read by Python's parser, which says exactly what is wrong."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadJson(f"the body is not UTF-8 text ({e.reason} at byte {e.start})") from None
    try:
        value = json.loads(
            text,
            object_pairs_hook=_unique_keys,
            parse_constant=_no_constant,
            parse_float=_finite_float,
        )
    except RecursionError:
        raise BadJson("the JSON is nested too deeply") from None
    except BadJson:
        raise
    except ValueError as e:
        raise BadJson(f"not valid JSON: {e}") from None
    if _has_lone_surrogate(value):
        raise BadJson("a string holds a lone UTF-16 surrogate (not valid Unicode)")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise BadJson(f"duplicate key {k!r} in a JSON object: give each key once")
            seen.add(k)
    return out


def _no_constant(name: str) -> Any:
    raise BadJson(f"{name} is not JSON: give a number or null")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadJson(f"the number {text[:40]} is out of range")
    return value


_SURROGATE = re.compile("[\ud800-\udfff]")


def _has_lone_surrogate(value: Any) -> bool:
    # A loop, not recursion: the value may be nested as deep as the parser allowed.
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            if _SURROGATE.search(v):
                return True
        elif isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return False

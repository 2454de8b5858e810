"""What shardq stores is always storable and readable again.

Every text a caller passes (job type, key, dedupe key, batch id, filters), every payload and
every handler result goes through here before it reaches storage: text must encode as UTF-8
(no lone UTF-16 surrogates) and, where it is stored as a bare column, hold no NUL (PostgreSQL
text cannot); JSON values must be JSON (no NaN or infinities, no two keys of one object that
become the same name) and nest at most ``MAX_DEPTH`` levels, well inside what Python's json
module, SQLite's and PostgreSQL's JSON functions read back. Texts shardq writes from what
happened (a handler's error message) are made safe instead of refused: see ``safe_text``.
A job's options, page sizes, time filters and ids are checked here too.
"""

from __future__ import annotations

import json
import re
import reprlib
from collections.abc import Collection, Iterator
from typing import Any

from ..errors import JobError
from ..models import DURATIONS, PRIORITIES, PRIORITY_RANK, JobPayload

#: Most levels of arrays and objects a payload or result may nest (a scalar is level 0).
MAX_DEPTH = 64
#: Longest job type, key, dedupe key or batch id, in characters.
MAX_NAME = 255
#: Most attempts a job may be given.
MAX_ATTEMPTS = 1000
#: The longest delay or timeout accepted (ten years), well inside 64-bit milliseconds.
MAX_SECONDS = 10 * 365 * 86_400.0
#: Bound of the creation-time filters (seconds since the epoch), well inside 64-bit ms.
_MAX_EPOCH = 1e13
#: Longest error text stored for an attempt, in characters (the rest is cut, and said so).
MAX_ERROR_CHARS = 4000

# One encoder for every payload: json.dumps with options builds a new one per call.
_JSON = json.JSONEncoder(allow_nan=False, separators=(",", ":"))
# The same without escaping: lone surrogates stay visible (with escaping, a lone pair of
# surrogates would be written exactly as the one astral character they stand for).
_JSON_RAW = json.JSONEncoder(allow_nan=False, ensure_ascii=False, separators=(",", ":"))
_SURROGATE = re.compile("[\ud800-\udfff]")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
_CONTAINERS = (dict, list, tuple)
_SHOW = reprlib.Repr()
_SHOW.maxstring = _SHOW.maxother = 60


def show(value: object) -> str:
    """A short printable rendering of any value for an error message (never raises)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    try:
        text = _SHOW.repr(value)
    except Exception:  # a broken __repr__ must not hide the real problem
        text = f"<{type(value).__name__}>"
    return safe_text(text, 200)


def safe_text(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    """``text`` made storable anywhere: lone surrogates and NUL written as backslash escapes
    (``\\udcff``, ``\\x00``), and cut to ``limit`` characters with a note of how much was cut."""
    if _UNSTORABLE.search(text):
        text = text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    if len(text) > limit:
        text = f"{text[:limit]}... ({len(text) - limit} more characters)"
    return text


def check_name(what: str, value: object) -> str:
    """``value`` if it is a usable name (job type, key, dedupe key, batch id): a non-blank
    string of at most ``MAX_NAME`` characters, valid Unicode, without NUL; else Validation."""
    if not isinstance(value, str) or not value.strip():
        raise JobError.from_validation(
            None, f"{what} must be a non-empty string, got {show(value)}"
        )
    if len(value) > MAX_NAME:
        raise JobError.from_validation(None, f"{what} is longer than {MAX_NAME} characters")
    check_text(what, value)
    return value


def check_text(what: str, value: str) -> None:
    """Refuse a string that no storage engine can hold as text: one with a lone surrogate
    (not UTF-8) or a NUL character (PostgreSQL text cannot hold it)."""
    bad = _UNSTORABLE.search(value)
    if bad is not None:
        raise JobError.from_validation(
            None,
            f"{what} holds {_describe_char(bad.group())} at position {bad.start()}; "
            "text must be valid Unicode without NUL",
        )


def check_seconds(what: str, value: object, *, zero_ok: bool) -> float:
    """``value`` as seconds: a real number (not a bool) within 0..``MAX_SECONDS`` (zero only
    if ``zero_ok``); any other value, however large or odd, raises Validation."""
    if (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        # Compared before any conversion: a huge int would overflow a float.
        and (value >= 0 if zero_ok else value > 0)
        and value <= MAX_SECONDS  # NaN fails both comparisons
    ):
        return float(value)
    low = "0" if zero_ok else "more than 0"
    raise JobError.from_validation(
        None, f"{what} must be {low} up to {MAX_SECONDS:.0f} seconds (ten years), got {show(value)}"
    )


def encode_json(what: str, value: Any) -> str:
    """``value`` as compact ASCII JSON, or Validation saying why it cannot be stored: not
    JSON (a set, NaN, a circular list), nested deeper than ``MAX_DEPTH``, two keys of one
    object that are the same JSON name (``1`` and ``"1"``), or a string with a lone surrogate.

    The common case costs one encoding: the shape is only walked when the text holds more
    than one bracket, and strings are only looked at again when it holds an escaped surrogate.
    """
    try:
        text = _JSON.encode(value)
    except RecursionError:
        raise _too_deep(what) from None
    except (TypeError, ValueError) as e:
        message = f"{what} is not JSON-serialisable: {safe_text(str(e), 200)}"
        if "Circular" in str(e):
            message = f"{what} refers to itself (a circular reference); it is not JSON"
        raise JobError.from_validation(None, message) from None
    if text.count("[") + text.count("{") > 1:
        _check_shape(what, value)
    elif isinstance(value, dict):
        _check_keys(what, value)
    # Lone surrogates and astral characters alike are written as \udXXX escapes.
    if "\\ud" in text and _SURROGATE.search(_JSON_RAW.encode(value)):
        raise JobError.from_validation(
            None,
            f"{_surrogate_path(what, value)} holds a lone UTF-16 surrogate; "
            "text must be valid Unicode",
        )
    return text


def _check_shape(what: str, value: Any) -> None:
    """Walk the containers of ``value`` level by level: depth and object keys."""
    level = [value] if isinstance(value, _CONTAINERS) else []
    for _ in range(MAX_DEPTH):
        below: list[Any] = []
        keep = below.append
        for container in level:
            items: Collection[Any] = container
            if isinstance(container, dict):
                _check_keys(what, container)
                items = container.values()
            for item in items:
                if isinstance(item, _CONTAINERS):
                    keep(item)
        if not below:
            return
        level = below
    raise _too_deep(what)


def _check_keys(what: str, obj: dict[Any, Any]) -> None:
    """Keys that are not strings become JSON names; two keys must not become the same one."""
    try:
        "".join(obj)  # in C, and it fails on the first key that is not a string
        return
    except TypeError:
        pass
    names: dict[str, Any] = {}
    for key in obj:
        name = key if isinstance(key, str) else _JSON.encode(key).strip('"')
        if name in names:
            raise JobError.from_validation(
                None,
                f"{what} has two keys that become the same JSON name {show(name)}: "
                f"{show(names[name])} and {show(key)}",
            )
        names[name] = key


def _too_deep(what: str) -> JobError:
    return JobError.from_validation(
        None, f"{what} is nested deeper than {MAX_DEPTH} levels of arrays and objects"
    )


def _surrogate_path(what: str, value: Any) -> str:
    """Where in ``value`` the first string with a surrogate is, as ``what["a"][0]``."""
    for path, text in _strings(value, what, 0):
        if _SURROGATE.search(text):
            return path
    return what


def _strings(value: Any, path: str, depth: int) -> Iterator[tuple[str, str]]:
    """Every string of ``value`` (keys too) with its path; ``value`` is known to be JSON."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict) and depth < MAX_DEPTH:
        for k, v in value.items():
            if isinstance(k, str):
                yield f"{path} key {show(k)}", k
            yield from _strings(v, f"{path}[{show(k)}]", depth + 1)
    elif isinstance(value, list | tuple) and depth < MAX_DEPTH:
        for i, v in enumerate(value):
            yield from _strings(v, f"{path}[{i}]", depth + 1)


def _describe_char(char: str) -> str:
    return "a NUL character" if char == "\x00" else f"a lone UTF-16 surrogate ({show(char)})"


def check_options(spec: JobPayload) -> tuple[int, float | None]:
    """Validate a job's options but its payload and dedupe key; returns its priority's rank and its timeout as a float."""
    check_name("job type", spec.type)
    priority, duration, ma = spec.priority, spec.duration, spec.max_attempts
    if not isinstance(priority, str) or priority not in PRIORITY_RANK:
        raise JobError.from_validation(
            None, f"unknown priority {show(priority)}; use one of {', '.join(PRIORITIES)}"
        )
    if not isinstance(duration, str) or duration not in DURATIONS:
        raise JobError.from_validation(
            None, f"unknown duration {show(duration)}; use 'short' or 'long'"
        )
    if ma is not None and (
        not isinstance(ma, int) or isinstance(ma, bool) or not 1 <= ma <= MAX_ATTEMPTS
    ):
        raise JobError.from_validation(
            None, f"max_attempts must be an integer 1..{MAX_ATTEMPTS}, got {show(ma)}"
        )
    if spec.key is not None:
        check_name("key", spec.key)
    if spec.batch_id is not None:
        check_name("batch_id", spec.batch_id)
    timeout = (
        None if spec.timeout is None else check_seconds("timeout", spec.timeout, zero_ok=False)
    )
    return PRIORITY_RANK[priority], timeout


def check_limit(limit: object) -> None:
    """Refuse a page size that is not an integer 1..1000."""
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1000:
        raise JobError.from_validation(None, f"limit must be an integer 1..1000, got {show(limit)}")


def epoch_ms(what: str, seconds: object) -> int | None:
    """A creation-time filter (seconds since the epoch) in milliseconds."""
    if seconds is None:
        return None
    if (
        not isinstance(seconds, int | float)
        or isinstance(seconds, bool)
        or not -_MAX_EPOCH <= seconds <= _MAX_EPOCH  # NaN fails it too
    ):
        raise JobError.from_validation(
            None, f"{what} must be a time in seconds since the epoch, got {show(seconds)}"
        )
    return int(seconds * 1000)


def parse_id(job_id: object) -> int:
    """A job or dead-letter id (decimal text or an int) as an int; NotFound for anything else."""
    if isinstance(job_id, int) and not isinstance(job_id, bool):
        text = str(job_id) if 0 <= job_id < 1 << 63 else ""
    else:
        text = job_id.strip() if isinstance(job_id, str) else ""
    # ASCII digits only: str.isdigit also holds for digits that int() refuses, such as "²".
    if not (text.isascii() and text.isdigit()) or len(text) > 19 or int(text) >= 1 << 63:
        shown = safe_text(job_id, 40) if isinstance(job_id, str) else show(job_id)
        raise JobError(
            "NotFound",
            shown,
            message=f"{show(job_id)} not found: job and dead-letter ids are decimal numbers",
        )
    return int(text)

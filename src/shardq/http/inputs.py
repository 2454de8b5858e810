"""What a request may say besides a submitted job: ids, query parameters and small bodies.

The rules here are the ones ``/openapi.json`` states (it is built from the same constants):
whatever the document calls valid is accepted, and whatever it calls invalid is refused with
a 400. Submitted jobs are declared in :mod:`shardq.schema` and checked by ``JobService``.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request

from .._internal.validation import check_name
from ..errors import JobError

MAX_ID = 2**63 - 1
#: Unix seconds as a query parameter: a plain decimal number below 10^11.
UNIX_SECONDS_PATTERN = r"^[0-9]{1,11}(\.[0-9]+)?$"
_D2 = "([0-9]{2})"
_RFC3339 = re.compile(
    rf"([0-9]{{4}})-{_D2}-{_D2}[Tt]{_D2}:{_D2}:{_D2}(?:\.[0-9]+)?(?:([Zz])|([+-]){_D2}:{_D2})"
)
_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


class ApiError(Exception):
    """A refused request: its HTTP status, a machine-readable reason and a message."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason
        self.message = message


def invalid(message: str) -> ApiError:
    """A 400 Validation refusal."""
    return ApiError(400, "Validation", message)


def as_object(value: Any, what: str) -> dict[str, Any]:
    """``value`` as a dict (a copy), or a refusal naming ``what``."""
    if not isinstance(value, dict):
        raise invalid(f"{what} must be a JSON object")
    return dict(value)


def require_empty(body: Any) -> None:
    """Refuse a body other than nothing or ``{}``."""
    if body is not None and body != {}:
        raise invalid("this endpoint takes no body (or an empty object)")


def only(data: dict[str, Any], allowed: set[str] | frozenset[str], what: str) -> None:
    """Refuse fields of ``data`` outside ``allowed``."""
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise invalid(
            f"unknown field(s) in {what}: {', '.join(unknown)}"
            f" (allowed: {', '.join(sorted(allowed))})"
        )


def is_id(value: str) -> bool:
    """True for a decimal id that fits a signed 64-bit integer."""
    return value.isascii() and value.isdigit() and len(value) <= 19 and int(value) <= MAX_ID


def path_id(request: Request, name: str) -> str:
    """The id in the path parameter ``name``; NotFound when it cannot be one."""
    value: str = request.path_params[name]
    if not is_id(value):
        raise ApiError(404, "NotFound", f"no job or dead letter has id {value!r}")
    return value


def path_name(request: Request, name: str) -> str:
    """The schedule name in the path parameter ``name``; NotFound when it cannot be one (a
    name is a non-blank string of at most 255 characters, valid Unicode, without NUL)."""
    value: str = request.path_params[name]
    try:
        return check_name("schedule name", value)
    except JobError:
        raise ApiError(404, "NotFound", f"no schedule named {value[:80]!r}") from None


def rfc3339_seconds(text: str) -> float | None:
    """Unix seconds of an RFC 3339 date-time (any year 0000-9999; second 60 only at 23:59
    UTC, a leap second), or None when ``text`` is not one."""
    m = _RFC3339.fullmatch(text)
    if m is None:
        return None
    y, mo, d, h, mi, s = (int(g) for g in m.groups()[:6])
    leap = y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)
    if not 1 <= mo <= 12 or not 1 <= d <= _DAYS[mo - 1] + (mo == 2 and leap):
        return None
    offset = 0  # minutes east of UTC
    if m.group(8):
        oh, om = int(m.group(9)), int(m.group(10))
        if oh > 23 or om > 59:
            return None
        offset = (oh * 60 + om) * (1 if m.group(8) == "+" else -1)
    utc_minute = (h * 60 + mi - offset) % 1440
    if h > 23 or mi > 59 or s > 60 or (s == 60 and utc_minute != 1439):
        return None
    return _days_from_civil(y, mo, d) * 86_400.0 + (h * 60 + mi - offset) * 60 + s


def _days_from_civil(y: int, m: int, d: int) -> int:
    # Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
    y -= m <= 2
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146_097 + doe - 719_468


_UNIX_SECONDS = re.compile(UNIX_SECONDS_PATTERN)


class Query:
    """The query parameters of a request, refusing unknown and repeated ones."""

    def __init__(self, request: Request, allowed: set[str]) -> None:
        self.params = request.query_params
        for name in self.params:
            if name not in allowed:
                raise invalid(f"unknown query parameter {name!r}")
            if len(self.params.getlist(name)) > 1:
                raise invalid(f"query parameter {name!r} is repeated")

    def text(self, name: str) -> str | None:
        """The parameter; None when absent or empty."""
        v = self.params.get(name)
        return v if v else None

    def flag(self, name: str) -> bool:
        """A true/false (or 1/0) parameter; false when absent."""
        v = self.params.get(name)
        if v is None:
            return False
        if v not in FLAG_VALUES:
            raise invalid(f"'{name}' must be true or false")
        return v in ("1", "true")

    def integer(self, name: str, default: int, lo: int, hi: int) -> int:
        """A decimal integer within lo..hi."""
        v = self.params.get(name)
        if v is None:
            return default
        if not (v.isascii() and v.isdigit()) or not lo <= int(v) <= hi:
            raise invalid(f"'{name}' must be an integer {lo}..{hi}")
        return int(v)

    def choice(self, name: str, options: tuple[str, ...]) -> str | None:
        """One of ``options``; None when absent."""
        v = self.params.get(name)
        if v is None:
            return None
        if v not in options:
            raise invalid(f"'{name}' must be one of {', '.join(options)}")
        return v

    def ident(self, name: str) -> str | None:
        """A page cursor: up to 19 decimal digits (past the largest id, it is the largest)."""
        v = self.params.get(name)
        if v is None:
            return None
        if not (v.isascii() and v.isdigit() and len(v) <= 19):
            raise invalid(f"'{name}' must be an id (up to 19 decimal digits)")
        return str(min(int(v), MAX_ID))

    def time(self, name: str) -> float | None:
        """Unix seconds or an RFC 3339 date-time with its zone, as Unix seconds (a time
        before 1970 counts as 1970, one after 10^11 s as 10^11 s: the same jobs match)."""
        v = self.params.get(name)
        if v is None:
            return None
        if _UNIX_SECONDS.fullmatch(v):
            return float(v)
        t = rfc3339_seconds(v)
        if t is None:
            raise invalid(
                f"'{name}' must be Unix seconds (e.g. 1700000000.5) or an RFC 3339 time"
                f" with its zone (e.g. 2024-01-01T00:00:00Z), got {v!r}"
            )
        return min(max(t, 0.0), 1e11)


FLAG_VALUES = ("true", "false", "1", "0")

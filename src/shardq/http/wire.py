"""JSON on the wire: request bodies parsed strictly, responses encoded whatever they hold.

A request body must be UTF-8 JSON with no repeated key in an object, no NaN or Infinity (also
not as an overflowing number such as ``1e400``), no lone UTF-16 surrogate in any string and no
nesting deeper than the parser's limit; anything else is :class:`BadJson`. A response encodes
any value a job may hold: non-ASCII text is escaped (so a lone surrogate stored by an older
version is sent as ``\\udXXX`` instead of failing the read), and a value nested too deep for
the C encoder is written by a loop instead of recursion.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from starlette.background import BackgroundTask
from starlette.responses import Response

_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89abcdefABCDEF]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class BadJson(ValueError):
    """A request body that is not acceptable JSON; the message says why."""


def parse_body(raw: bytes) -> Any:
    """The JSON value of ``raw`` under the rules of this module; :class:`BadJson` if not."""
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
        raise BadJson("the body is nested too deeply") from None
    except BadJson:
        raise
    except ValueError as e:
        raise BadJson(f"malformed JSON: {e}") from None
    # Escaped surrogates are rare (a valid pair is one too): only then look at every string.
    if _SURROGATE_ESCAPE.search(raw) and _has_lone_surrogate(value):
        raise BadJson("a string holds a lone UTF-16 surrogate (not valid Unicode)")
    return value


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise BadJson(f"an object repeats the key {k!r}")
            seen.add(k)
    return out


def _no_constant(name: str) -> Any:
    raise BadJson(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadJson(f"the number {text[:40]} is out of range")
    return value


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


def encode(content: Any) -> bytes:
    """``content`` as compact ASCII JSON. Non-finite floats become null; deep values work."""
    try:
        return json.dumps(
            content, ensure_ascii=True, allow_nan=False, separators=(",", ":")
        ).encode("ascii")
    except (RecursionError, ValueError):
        return _encode_by_loop(content).encode("ascii")


class _Piece(str):
    """Literal JSON text on the encoder's stack (a plain str there is a value to write)."""


def _encode_by_loop(content: Any) -> str:
    """The same JSON as :func:`encode`, written with an explicit stack instead of recursion."""
    out: list[str] = []
    stack: list[Any] = [content]
    while stack:
        v = stack.pop()
        if type(v) is _Piece:
            out.append(v)
        elif isinstance(v, dict):
            stack.append(_Piece("}"))
            for i, (k, item) in enumerate(reversed(list(v.items()))):
                stack.append(item)
                stack.append(_Piece(json.dumps(str(k)) + ":"))
                if i < len(v) - 1:
                    stack.append(_Piece(","))
            stack.append(_Piece("{"))
        elif isinstance(v, list | tuple):
            stack.append(_Piece("]"))
            for i, item in enumerate(reversed(v)):
                stack.append(item)
                if i < len(v) - 1:
                    stack.append(_Piece(","))
            stack.append(_Piece("["))
        elif isinstance(v, float) and not math.isfinite(v):
            out.append("null")
        else:
            out.append(json.dumps(v))
    return "".join(out)


class JsonResponse(Response):
    """A JSON response that cannot fail to encode what it was given (see :func:`encode`)."""

    media_type = "application/json"

    def __init__(
        self,
        content: Any,
        status_code: int = 200,
        headers: dict[str, str] | None = None,
        background: BackgroundTask | None = None,
    ) -> None:
        super().__init__(content, status_code, headers, None, background)

    def render(self, content: Any) -> bytes:
        return encode(content)

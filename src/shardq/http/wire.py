"""JSON on the wire: request bodies parsed strictly, responses encoded whatever they hold.

Request bodies are read by :func:`shardq.schema.decode_json` (UTF-8 only, no repeated key,
no NaN or Infinity, no lone surrogate, bounded nesting). A response encodes any value a job
may hold: msgspec writes it as UTF-8 JSON; a value it cannot write (a lone surrogate stored
by an older version, a value nested too deep for recursion) is written as ASCII JSON by this
module instead of failing the read.
"""

from __future__ import annotations

import json
import math
from typing import Any

import msgspec
from starlette.background import BackgroundTask
from starlette.responses import Response

from ..schema import decode_json

__all__ = ["JsonResponse", "encode", "parse_body"]

#: The JSON value of a request body (see :func:`shardq.schema.decode_json`).
parse_body = decode_json
_ENCODE = msgspec.json.Encoder()


def encode(content: Any) -> bytes:
    """``content`` as compact JSON. Non-finite floats become null; deep values work."""
    try:
        return _ENCODE.encode(content)
    except (RecursionError, UnicodeEncodeError, TypeError, OverflowError):
        pass
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

"""Typed payloads and results: validate, encode and decode a declared Python type as JSON.

msgspec handles dataclasses, TypedDicts, msgspec Structs, NamedTuples, enums and the
builtin types, nested in any way it supports. A pydantic model (the type itself, at the top)
goes through pydantic, which is imported only when such a type is declared. Both follow JSON
semantics: what is submitted decodes in the handler exactly as it would from the stored text.
"""

from __future__ import annotations

import sys
from typing import Any, Generic, Protocol, TypeVar

import msgspec

from ..errors import JobError

T = TypeVar("T")

#: Where JSON Schema references point inside an OpenAPI document; ``name`` is the type's.
REF_PREFIX = "#/components/schemas/task."


class Codec(Protocol[T]):
    """How values of one declared type become JSON-ready builtins and back."""

    #: The declared type, for messages.
    name: str

    def encode(self, value: T) -> object:
        """``value`` as JSON-ready builtins, checked to decode back as the declared type;
        raises ``JobError(reason="Validation")`` otherwise."""
        ...

    def decode(self, data: object) -> T:
        """JSON-ready ``data`` as the declared type; ``JobError(reason="Validation")`` if it
        does not fit."""
        ...

    def schema(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """The JSON Schema of the type and the named schemas it refers to (references start
        with ``REF_PREFIX``)."""
        ...


def _refused(what: str, name: str, error: object) -> JobError:
    return JobError.from_validation(None, f"{what} does not fit {name}: {error}")


class MsgspecCodec(Generic[T]):
    """A type msgspec knows: encoded with ``to_builtins``, checked and decoded through JSON."""

    def __init__(self, tp: Any, what: str) -> None:
        self._type = tp
        self._what = what
        self.name = getattr(tp, "__name__", repr(tp))
        self._decoder: msgspec.json.Decoder[T] = msgspec.json.Decoder(tp)
        self._encoder = msgspec.json.Encoder()
        try:
            msgspec.json.schema(tp)
        except (TypeError, ValueError) as e:
            raise JobError.from_validation(
                None, f"{what} type {self.name} is not supported ({e})"
            ) from None

    def encode(self, value: T) -> object:
        try:
            data = msgspec.to_builtins(value)
            self._decoder.decode(self._encoder.encode(data))
        except (msgspec.ValidationError, msgspec.EncodeError, TypeError, ValueError) as e:
            raise _refused(self._what, self.name, e) from None
        return data

    def decode(self, data: object) -> T:
        try:
            return self._decoder.decode(self._encoder.encode(data))
        except (msgspec.ValidationError, msgspec.EncodeError, TypeError, ValueError) as e:
            raise _refused(self._what, self.name, e) from None

    def schema(self) -> tuple[dict[str, Any], dict[str, Any]]:
        (top,), components = msgspec.json.schema_components(
            [self._type], ref_template=REF_PREFIX + "{name}"
        )
        return top, components


class PydanticCodec(Generic[T]):
    """A pydantic model: validated and dumped (JSON mode) by a ``TypeAdapter``."""

    def __init__(self, tp: Any, what: str) -> None:
        from pydantic import TypeAdapter

        self._what = what
        self.name = getattr(tp, "__name__", repr(tp))
        self._adapter: Any = TypeAdapter(tp)

    def _errors(self) -> tuple[type[Exception], ...]:
        from pydantic import ValidationError
        from pydantic_core import PydanticSerializationError

        return ValidationError, PydanticSerializationError, TypeError, ValueError

    def encode(self, value: T) -> object:
        try:
            return self._adapter.dump_python(self._adapter.validate_python(value), mode="json")
        except self._errors() as e:
            raise _refused(self._what, self.name, e) from None

    def decode(self, data: object) -> T:
        try:
            out: T = self._adapter.validate_python(data)
        except self._errors() as e:
            raise _refused(self._what, self.name, e) from None
        return out

    def schema(self) -> tuple[dict[str, Any], dict[str, Any]]:
        top: dict[str, Any] = self._adapter.json_schema(ref_template=REF_PREFIX + "{model}")
        return top, top.pop("$defs", {})


class AnyCodec:
    """No declared type: values pass as they are (shardq's JSON rules still apply)."""

    name = "any JSON value"

    def encode(self, value: object) -> object:
        return value

    def decode(self, data: object) -> object:
        return data

    def schema(self) -> tuple[dict[str, Any], dict[str, Any]]:
        return {}, {}


def codec_for(tp: Any, what: str) -> Codec[Any]:
    """The codec of ``tp`` (``what``: "payload" or "result", for messages). ``Any`` and
    ``object`` take values as they are."""
    if tp is Any or tp is object:
        return AnyCodec()
    pydantic = sys.modules.get("pydantic")
    if pydantic is not None and isinstance(tp, type) and issubclass(tp, pydantic.BaseModel):
        return PydanticCodec(tp, what)
    return MsgspecCodec(tp, what)

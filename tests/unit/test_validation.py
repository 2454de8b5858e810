from __future__ import annotations

import json
from typing import Any

import pytest

from shardq import JobError
from shardq._internal.attempts import _describe
from shardq._internal.validation import (
    MAX_DEPTH,
    MAX_ERROR_CHARS,
    check_name,
    check_seconds,
    encode_json,
    parse_id,
    safe_text,
    show,
)


def _deep(depth: int) -> Any:
    value: Any = 0
    for _ in range(depth):
        value = [value]
    return value


def _refused(value: Any) -> str:
    with pytest.raises(JobError) as info:
        encode_json("payload", value)
    assert info.value.reason == "Validation"
    return str(info.value)


def test_exactly_the_depth_limit_is_accepted_and_one_more_is_not() -> None:
    assert json.loads(encode_json("payload", _deep(MAX_DEPTH))) == _deep(MAX_DEPTH)
    assert "nested deeper than 64" in _refused(_deep(MAX_DEPTH + 1))
    assert "nested deeper" in _refused({"a": [1, {"b": _deep(MAX_DEPTH - 1)}]})
    assert "nested deeper" in _refused(_deep(100_000))


def test_a_circular_value_is_refused_as_such() -> None:
    loop: list[Any] = []
    loop.append(loop)
    assert "circular" in _refused(loop)


def test_surrogates_are_told_from_astral_characters_and_escaped_text() -> None:
    # A real astral character, and text that only looks like an escape, are fine.
    for fine in ["\U0001f600", "\\ud800", "\\\\ud800", {"\U0001f600": "x"}]:
        assert json.loads(encode_json("payload", fine)) == fine
    # Two surrogate code points would read back as the one character they stand for.
    assert "surrogate" in _refused("\ud83d\ude00")
    assert "payload[0]['k'] holds" in _refused([{"k": "\udfff"}])
    assert "payload['a'] key '\\udcff'" in _refused({"a": {"\udcff": 1}})


def test_keys_that_become_the_same_json_name_are_refused() -> None:
    for obj in ({1: 1, "1": 2}, {True: 1, "true": 2}, {None: 1, "null": 2}, {1.5: 1, "1.5": 2}):
        assert "same JSON name" in _refused({"nested": [obj]})
        assert "same JSON name" in _refused(obj)
    assert json.loads(encode_json("payload", {1: "a", 2: "b", "x": [{3: 4}]})) == {
        "1": "a",
        "2": "b",
        "x": [{"3": 4}],
    }


def test_safe_text_escapes_what_storage_cannot_hold_and_caps_the_length() -> None:
    assert safe_text("ok \u00e9 \U0001f600") == "ok \u00e9 \U0001f600"
    assert safe_text("a\udcffb\x00c") == "a\\udcffb\\x00c"
    long = safe_text("x" * 10_000)
    assert long.startswith("x" * MAX_ERROR_CHARS) and long.endswith("(6000 more characters)")
    long.encode("utf-8")


@pytest.mark.parametrize(
    "value", [10**5000, "\ud800" * 1000, [1] * 10**5, object()], ids=["int", "str", "list", "obj"]
)
def test_show_is_short_printable_and_never_raises(value: Any) -> None:
    text = show(value)
    text.encode("utf-8")
    assert len(text) <= 200


def test_names_and_seconds() -> None:
    assert check_name("key", "\U0001f600" * 255) == "\U0001f600" * 255
    for bad in ("", " \t", "x" * 256, "a\x00", "\udc80", 5, None):
        with pytest.raises(JobError):
            check_name("key", bad)
    assert check_seconds("delay", 0, zero_ok=True) == 0.0
    for seconds in (0, -1, 10**400, float("nan"), float("inf"), True, "1", None):
        with pytest.raises(JobError):
            check_seconds("timeout", seconds, zero_ok=False)


def test_ids() -> None:
    assert parse_id(" 42 ") == parse_id(42) == 42
    bad: object
    for bad in ("\u00b2", "\u0661", "-1", str(1 << 63), 1 << 63, 10**5000, True, 1.0, None):
        with pytest.raises(JobError) as info:
            parse_id(bad)
        assert info.value.reason == "NotFound"


def test_an_attempts_error_text_is_had_even_when_the_exception_will_not_say() -> None:
    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no text for you")

    assert _describe(Unprintable()) == "Unprintable"
    assert _describe(ValueError("bad \udcff")) == "ValueError: bad \\udcff"
    assert _describe(JobError.from_validation(None, "x\x00")) == "Validation: invalid job: x\\x00"

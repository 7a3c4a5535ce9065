import json
import re

import pytest

from protocol import ProtocolError, decode_frame
from protocol.fields import (Fields, check_bool, check_float, check_id, check_int, check_str,
                             quote)


def error_of(call, *args, **kwargs):
    with pytest.raises(ProtocolError) as caught:
        call(*args, **kwargs)
    return caught.value


@pytest.mark.parametrize("value", [True, False, 1.0, "1", None, [1], b"1"])
def test_int_is_strict(value):
    error = error_of(check_int, value, "n", 0, 10)
    assert (error.code, error.field) == ("invalid_field", "n")
    assert error.message.startswith("n must be an integer, got ")


def test_int_range_is_inclusive():
    assert check_int(0, "n", 0, 10) == 0 and check_int(10, "n", 0, 10) == 10
    assert "between 0 and 10, got 11" in error_of(check_int, 11, "n", 0, 10).message


@pytest.mark.parametrize("value", [True, "0.5", None, [0.5]])
def test_float_is_strict(value):
    assert error_of(check_float, value, "x", 0.0, 1.0).message.startswith("x must be a number")


def test_float_bounds():
    assert check_float(1, "x", 0.0, 1.0) == 1.0
    assert error_of(check_float, 0.0, "x", 0.0, 1.0, lo_open=True).message == \
        "x must be > 0.0 and <= 1.0, got 0.0"
    for value in (float("nan"), float("inf"), 10**400, 1.0000001):
        assert error_of(check_float, value, "x", 0.0, 1.0).code == "invalid_field"


def test_bool_is_strict():
    assert check_bool(False, "b") is False
    assert error_of(check_bool, 0, "b", ).message == "b must be a boolean, got an integer"


def test_str_limits_and_patterns():
    assert check_str("", "s", max_chars=3) == ""
    assert error_of(check_str, "", "s", max_chars=3, allow_empty=False).code == "invalid_field"
    error = error_of(check_str, "abcd", "s", max_chars=3)
    assert (error.code, error.message) == ("limit_exceeded", "s has 4 characters; the limit is 3")
    error = error_of(check_str, "AB", "s", max_chars=3, pattern=re.compile("[a-z]+"), rule="lower")
    assert error.message == "s must be lower, got 'AB'"


def test_ids():
    for good in ("a", "img-1", "resp_2.3:x", "A" * 64):
        assert check_id(good, "id", 64) == good
    for bad in ("", "a b", "ü", "a/b", "x\n"):
        assert error_of(check_id, bad, "id", 64).code == "invalid_field"


def test_unpaired_surrogates_are_rejected():
    assert check_str("ok 🐈", "s", max_chars=10) == "ok 🐈"
    assert error_of(check_str, "bad \ud800", "s", max_chars=10).code == "invalid_field"
    frame = '{"type": "session.update", "instructions": "x\\ud800"}'
    error = error_of(decode_frame, frame, max_bytes=1000)
    assert (error.code, error.field) == ("invalid_field", "instructions")
    paired = json.loads('"\\ud83d\\udc08"')  # an escaped pair is one valid character
    assert check_str(paired, "s", max_chars=10) == "🐈"


def test_quote_bounds_client_text():
    assert quote("x" * 100) == repr("x" * 40 + "...")
    assert quote(b"raw") == "binary" and quote(None) == "null"


def test_fields_rejects_unknown_and_non_string_keys():
    error = error_of(Fields, {"a": 1, "b": 2}, "m", frozenset({"a"}))
    assert (error.code, error.field, error.message) == ("unknown_field", "m.b",
                                                        "unknown field 'm.b'")
    assert error_of(Fields, {b"a": 1}, "m", frozenset({"a"})).code == "unknown_field"
    assert error_of(Fields, [1], "m", None).message == "m must be a map, got an array"


def test_fields_get_required_and_null():
    fields = Fields({"a": None, "b": 2}, "m", None)
    assert fields.get("a") is None and fields.get_int("b", 0, 5) == 2
    error = error_of(fields.get, "a", required=True)
    assert (error.code, error.field, error.message) == ("missing_field", "m.a", "m.a is required")

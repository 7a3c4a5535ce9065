"""Strict readers for decoded wire values; every failure is a ProtocolError naming the field's path.

Types are strict: a boolean is not an integer, an integer is not a boolean, a string is not a
number. A float field accepts integers. A null optional field counts as absent.
"""

from __future__ import annotations

import math
import re
from typing import Any

from protocol.errors import (INVALID_FIELD, LIMIT_EXCEEDED, MISSING_FIELD, UNKNOWN_FIELD,
                             ProtocolError)

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
INT64_MAX = 2**63 - 1

ID_PATTERN = re.compile(r"[A-Za-z0-9_.:\-]+")
ID_RULE = "letters, digits, '_', '.', ':' or '-'"

_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
               bytes: "binary", list: "an array", dict: "a map", type(None): "null"}


def type_name(value: Any) -> str:
    """How a decoded value's type is named in error messages."""
    return _TYPE_NAMES.get(type(value), "an extension type")


def quote(text: Any, limit: int = 40) -> str:
    """A short, safe quotation of client-supplied text for an error message."""
    if not isinstance(text, str):
        return type_name(text)
    return repr(text if len(text) <= limit else text[:limit] + "...")


def join(path: str, key: Any) -> str:
    name = key if isinstance(key, str) else quote(key)
    return f"{path}.{name}" if path else name


def wrong_type(field: str, expected: str, value: Any) -> ProtocolError:
    return ProtocolError(INVALID_FIELD, f"{field} must be {expected}, got {type_name(value)}",
                         field=field)


def invalid(field: str, message: str) -> ProtocolError:
    return ProtocolError(INVALID_FIELD, f"{field} {message}", field=field)


def over_limit(field: str, what: str, count: int, limit: int) -> ProtocolError:
    return ProtocolError(LIMIT_EXCEEDED, f"{field} has {count} {what}; the limit is {limit}",
                         field=field)


def is_unicode(text: str) -> bool:
    """False if `text` holds an unpaired surrogate (JSON can spell one as an escape: \\ud800)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_str(value: Any, field: str, *, max_chars: int, allow_empty: bool = True,
              pattern: re.Pattern | None = None, rule: str = "") -> str:
    if type(value) is not str:
        raise wrong_type(field, "a string", value)
    if len(value) > max_chars:
        raise over_limit(field, "characters", len(value), max_chars)
    if not value and not allow_empty:
        raise invalid(field, "must not be empty")
    if not is_unicode(value):
        raise invalid(field, "holds an unpaired surrogate, which is not valid Unicode")
    if pattern is not None and not pattern.fullmatch(value):
        raise invalid(field, f"must be {rule}, got {quote(value)}")
    return value


def check_id(value: Any, field: str, max_chars: int) -> str:
    return check_str(value, field, max_chars=max_chars, allow_empty=False, pattern=ID_PATTERN,
                     rule=ID_RULE)


def check_choice(value: Any, field: str, choices: tuple[str, ...]) -> str:
    if type(value) is not str:
        raise wrong_type(field, "a string", value)
    if value not in choices:
        raise invalid(field, f"must be one of {', '.join(choices)}; got {quote(value)}")
    return value


def check_int(value: Any, field: str, lo: int, hi: int) -> int:
    if type(value) is not int:
        raise wrong_type(field, "an integer", value)
    if not lo <= value <= hi:
        raise invalid(field, f"must be between {lo} and {hi}, got {value}")
    return value


def check_float(value: Any, field: str, lo: float, hi: float, *, lo_open: bool = False) -> float:
    if type(value) is not float and type(value) is not int:
        raise wrong_type(field, "a number", value)
    if type(value) is int and abs(value) > 2**53:
        raise invalid(field, "is too large")
    value = float(value)
    low_ok = value > lo if lo_open else value >= lo
    if not (low_ok and value <= hi and math.isfinite(value)):
        raise invalid(field, f"must be {'>' if lo_open else '>='} {lo} and <= {hi}, got {value}")
    return value


def check_bool(value: Any, field: str) -> bool:
    if type(value) is not bool:
        raise wrong_type(field, "a boolean", value)
    return value


def check_list(value: Any, field: str, *, max_items: int, what: str = "items") -> list:
    if type(value) is not list:
        raise wrong_type(field, "an array", value)
    if len(value) > max_items:
        raise over_limit(field, what, len(value), max_items)
    return value


class Fields:
    """One wire map read field by field. With `allowed`, any other key is an `unknown_field`."""

    __slots__ = ("_map", "path")

    def __init__(self, value: Any, path: str, allowed: frozenset[str] | None) -> None:
        if type(value) is not dict:
            raise wrong_type(path, "a map", value)
        if allowed is not None:
            for key in value:
                if key not in allowed:
                    field = join(path, key)
                    raise ProtocolError(UNKNOWN_FIELD, f"unknown field {quote(field, 80)}",
                                        field=field)
        self._map = value
        self.path = path

    def field(self, key: str) -> str:
        return join(self.path, key)

    def get(self, key: str, required: bool = False) -> Any:
        """The raw value, or None when absent or null; raises `missing_field` if required."""
        value = self._map.get(key)
        if value is None and required:
            field = self.field(key)
            raise ProtocolError(MISSING_FIELD, f"{field} is required", field=field)
        return value

    def get_str(self, key: str, *, max_chars: int, required: bool = False,
                allow_empty: bool = True) -> str | None:
        value = self.get(key, required)
        if value is None:
            return None
        return check_str(value, self.field(key), max_chars=max_chars, allow_empty=allow_empty)

    def get_id(self, key: str, *, max_chars: int, required: bool = False) -> str | None:
        value = self.get(key, required)
        return None if value is None else check_id(value, self.field(key), max_chars)

    def get_choice(self, key: str, choices: tuple[str, ...], required: bool = False) -> str | None:
        value = self.get(key, required)
        return None if value is None else check_choice(value, self.field(key), choices)

    def get_int(self, key: str, lo: int, hi: int, required: bool = False) -> int | None:
        value = self.get(key, required)
        return None if value is None else check_int(value, self.field(key), lo, hi)

    def get_float(self, key: str, lo: float, hi: float, *, lo_open: bool = False,
                  required: bool = False) -> float | None:
        value = self.get(key, required)
        if value is None:
            return None
        return check_float(value, self.field(key), lo, hi, lo_open=lo_open)

    def get_bool(self, key: str, required: bool = False) -> bool | None:
        value = self.get(key, required)
        return None if value is None else check_bool(value, self.field(key))

    def get_map(self, key: str, allowed: frozenset[str] | None,
                required: bool = False) -> Fields | None:
        value = self.get(key, required)
        return None if value is None else Fields(value, self.field(key), allowed)

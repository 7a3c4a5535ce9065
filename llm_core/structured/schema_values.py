"""Reading the values of JSON Schema keywords: counts, numeric bounds, and instance types.

Bounds are `decimal.Decimal` (a float bound goes through its repr, so 0.1 stays 0.1); a malformed
value raises a SchemaError naming the keyword.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from .errors import SchemaError


def has_type(value, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool) or \
            isinstance(value, float) and value.is_integer()
    python_types = {"null": type(None), "boolean": bool, "string": str, "array": list, "object": dict,
                    "number": (int, float)}
    return isinstance(value, python_types[name]) and (name == "boolean" or not isinstance(value, bool))


def count(schema: dict, key: str, path: str) -> int | None:
    value = schema.get(key)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise SchemaError(f"{key!r} must be a non-negative integer, got {value!r}", path)
    return value


def number(schema: dict, key: str, path: str) -> Decimal | None:
    value = schema.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SchemaError(f"{key!r} must be a number, got {value!r}", path)
    try:
        return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    except InvalidOperation:
        raise SchemaError(f"{key!r} must be a finite number", path) from None


def bounds(schema: dict, path: str) -> tuple[Decimal | None, bool, Decimal | None, bool]:
    """(lo, lo_exclusive, hi, hi_exclusive) from minimum/maximum and their exclusive forms."""
    lo, hi = number(schema, "minimum", path), number(schema, "maximum", path)
    lo_excl = hi_excl = False
    if isinstance(schema.get("exclusiveMinimum"), bool):  # draft 4
        lo_excl = schema["exclusiveMinimum"] and lo is not None
    elif (e := number(schema, "exclusiveMinimum", path)) is not None and (lo is None or e >= lo):
        lo, lo_excl = e, True
    if isinstance(schema.get("exclusiveMaximum"), bool):
        hi_excl = schema["exclusiveMaximum"] and hi is not None
    elif (e := number(schema, "exclusiveMaximum", path)) is not None and (hi is None or e <= hi):
        hi, hi_excl = e, True
    for bound in (lo, hi):
        if bound is not None and not bound.is_finite():
            raise SchemaError("numeric bounds must be finite", path)
    return lo, lo_excl, hi, hi_excl


def integer_bounds(lo, lo_excl, hi, hi_excl) -> tuple[int | None, int | None]:
    int_lo = int_hi = None
    if lo is not None:
        int_lo = int(lo.to_integral_value(rounding="ROUND_FLOOR")) + 1 if lo_excl else \
            int(lo.to_integral_value(rounding="ROUND_CEILING"))
    if hi is not None:
        int_hi = int(hi.to_integral_value(rounding="ROUND_CEILING")) - 1 if hi_excl else \
            int(hi.to_integral_value(rounding="ROUND_FLOOR"))
    return int_lo, int_hi

"""Local `$ref` resolution and `allOf` merging for the JSON Schema compiler.

Only local references ("#", "#/$defs/x", any JSON pointer into the root) are supported. `allOf` is
merged into one schema where the keywords allow it (types intersect, properties and required unite,
bounds tighten, overlapping property schemas become a nested allOf); two different values of a
keyword we cannot merge raise a SchemaError naming it.
"""

from __future__ import annotations

from urllib.parse import unquote

from .errors import SchemaError

ANNOTATIONS = frozenset({"title", "description", "$comment", "examples", "default", "deprecated",
                         "readOnly", "writeOnly", "$schema", "$id"})
DEFINITIONS = frozenset({"$defs", "definitions"})
_MAX_MERGE_DEPTH = 32
_TAKE_MAX = frozenset({"minLength", "minItems", "minimum"})
_TAKE_MIN = frozenset({"maxLength", "maxItems", "maximum"})


def resolve_ref(root, ref, path: str):
    """The schema that `ref` points to inside `root`."""
    if not isinstance(ref, str) or not ref.startswith("#"):
        raise SchemaError(f"only local '$ref' (starting with '#') is supported, got {ref!r}", path)
    node = root
    pointer = unquote(ref[1:])
    if pointer and not pointer.startswith("/"):
        raise SchemaError(f"'$ref' to an anchor is not supported: {ref!r}", path)
    for part in pointer.split("/")[1:] if pointer else ():
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            raise SchemaError(f"'$ref' {ref!r} points to nothing", path)
    return node


def merge_all_of(schema: dict, path: str, root, depth: int = 0):
    """`schema` with its allOf folded in: one schema (a dict, or False when nothing can match)."""
    if depth > _MAX_MERGE_DEPTH:
        raise SchemaError("'allOf' nests or refers to itself too deeply", path)
    parts = schema["allOf"]
    if not isinstance(parts, list) or not parts:
        raise SchemaError("'allOf' must be a non-empty array", path)
    merged = {k: v for k, v in schema.items() if k != "allOf"}
    for i, part in enumerate(parts):
        sub_path = f"{path}/allOf/{i}"
        while isinstance(part, dict) and set(part) - ANNOTATIONS == {"$ref"}:
            part = resolve_ref(root, part["$ref"], sub_path)
        if part is True:
            continue
        if part is False:
            return False
        if not isinstance(part, dict):
            raise SchemaError("a schema must be an object or a boolean", sub_path)
        if "allOf" in part:
            part = merge_all_of(part, sub_path, root, depth + 1)
            if part is False:
                return False
        merged = _merge_two(merged, part, sub_path)
    return merged


def _merge_two(a: dict, b: dict, path: str) -> dict:
    out = dict(a)
    for key, value in b.items():
        if key not in out or out[key] == value or key in ANNOTATIONS:
            out.setdefault(key, value)
            continue
        current = out[key]
        if key == "type":
            out[key] = _intersect_types(current, value, path)
        elif key == "properties":
            props = dict(current)
            for name, sub in value.items():
                props[name] = {"allOf": [props[name], sub]} if name in props else sub
            out[key] = props
        elif key == "required":
            out[key] = list(dict.fromkeys(list(current) + list(value)))
        elif key in DEFINITIONS:
            out[key] = {**current, **value}
        elif key in _TAKE_MAX or (key == "exclusiveMinimum" and _both_numbers(current, value)):
            out[key] = max(current, value)
        elif key in _TAKE_MIN or (key == "exclusiveMaximum" and _both_numbers(current, value)):
            out[key] = min(current, value)
        elif key in ("items", "additionalProperties"):
            out[key] = False if False in (current, value) else {"allOf": [current, value]}
        elif key == "enum":
            out[key] = [v for v in current if v in value]
        elif key in ("anyOf", "oneOf"):
            out[key] = [{"allOf": [x, y]} for x in current for y in value]
        else:
            raise SchemaError(f"'allOf' cannot merge two different values of {key!r}", path)
    return out


def _both_numbers(x, y) -> bool:
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (x, y))


def _intersect_types(a, b, path: str) -> list[str]:
    a = [a] if isinstance(a, str) else list(a)
    b = [b] if isinstance(b, str) else list(b)
    out = [t for t in a if t in b]
    if "number" in a and "integer" in b or "integer" in a and "number" in b:
        out.append("integer")
    out = list(dict.fromkeys(out))
    if not out:
        raise SchemaError(f"'allOf' combines types {a} and {b}, which have no value in common", path)
    return out

"""JSON Schema -> regex tree -> Grammar (`compile_json_schema`).

Output shape: properties in schema order (optional ones may be left out, the order never changes),
whitespace between tokens limited to `whitespace()` (newline + max_whitespace spaces), recursion
through `$ref` cut after `max_recursion_depth` expansions (the branch that would go deeper is
dropped, so a tree schema yields trees of bounded depth). Strict by default: when `properties` is
given and `additionalProperties` is not, no other property is generated; after `prefixItems`
without `items`, no other item. Keywords outside SUPPORTED raise UnsupportedKeywordError.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

from .errors import RegexError, SchemaError, UnsupportedKeywordError
from .grammar import Grammar, grammar_from_tree, grammar_key
from .json_containers import any_value, array_node, member_node, object_node
from .json_formats import FORMATS, format_tree
from .json_numbers import integer_range, number_range
from .json_text import QUOTE, encode_string_content, json_string, string_literal, value_literal, whitespace
from .regex_ast import NOTHING, Node, alt, concat, is_nothing, literal
from .regex_parser import parse_regex_search
from .schema_refs import ANNOTATIONS, DEFINITIONS, merge_all_of, resolve_ref
from .schema_values import bounds, count, has_type, integer_bounds

TYPE_KEYWORDS = {
    "object": ("properties", "required", "additionalProperties"),
    "array": ("items", "prefixItems", "additionalItems", "minItems", "maxItems"),
    "string": ("minLength", "maxLength", "pattern", "format"),
    "number": ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"),
}
ALL_TYPES = ("object", "array", "string", "number", "integer", "boolean", "null")
SUPPORTED = frozenset(k for kws in TYPE_KEYWORDS.values() for k in kws) | ANNOTATIONS | DEFINITIONS | {
    "type", "enum", "const", "anyOf", "oneOf", "allOf", "$ref", "nullable"}
DEFAULT_MAX_WHITESPACE = 20


@dataclass(frozen=True)
class JsonSchemaOptions:
    max_recursion_depth: int = 3
    max_whitespace: int = DEFAULT_MAX_WHITESPACE

    def __post_init__(self):
        for name in ("max_recursion_depth", "max_whitespace"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value!r}")


def compile_json_schema(schema: dict | bool | str, *, max_recursion_depth: int = 3,
                        max_whitespace: int = DEFAULT_MAX_WHITESPACE) -> Grammar:
    """A Grammar of the JSON texts that are instances of `schema` (a dict, or its JSON text).

    Raises SchemaError (UnsupportedKeywordError for a keyword we do not support) naming the place
    in the schema, and GrammarTooLargeError for a schema whose automaton would be too large.
    Results are memoized by (canonical schema, settings).
    """
    options = JsonSchemaOptions(max_recursion_depth, max_whitespace)
    return compile_canonical_schema(canonical_schema(schema), options)


def canonical_schema(schema: dict | bool | str) -> str:
    """The schema as compact JSON text, keys in their given order (property order is meaningful)."""
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except json.JSONDecodeError as exc:
            raise SchemaError(f"schema is not valid JSON: {exc}") from None
    try:
        return json.dumps(schema, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise SchemaError(f"schema is not a JSON value: {exc}") from None


def json_schema_key(source: str, options: JsonSchemaOptions) -> str:
    return grammar_key("json_schema", source, {"max_recursion_depth": options.max_recursion_depth,
                                               "max_whitespace": options.max_whitespace})


@lru_cache(maxsize=128)
def compile_canonical_schema(source: str, options: JsonSchemaOptions) -> Grammar:
    schema = json.loads(source)
    tree = _SchemaCompiler(schema, options).compile(schema, "#")
    if is_nothing(tree):
        raise SchemaError(f"schema allows no JSON value (max_recursion_depth="
                          f"{options.max_recursion_depth})")
    return grammar_from_tree(tree, json_schema_key(source, options), f"json_schema {source[:40]!r}")


class _SchemaCompiler:
    def __init__(self, root, options: JsonSchemaOptions):
        self.root = root
        self.depth = options.max_recursion_depth
        self.max_whitespace = options.max_whitespace
        self.ws = whitespace(options.max_whitespace)
        self.ref_counts: dict[str, int] = {}

    def compile(self, schema, path: str) -> Node:
        if schema is True:
            return any_value(self.depth, self.max_whitespace)
        if schema is False:
            return NOTHING
        if not isinstance(schema, dict):
            raise SchemaError(f"a schema must be an object or a boolean, not {type(schema).__name__}", path)
        for key in schema:
            if key not in SUPPORTED and not key.startswith("x-"):
                raise UnsupportedKeywordError(key, path)
        if "$ref" in schema:
            return self.compile_ref(schema, path)
        if "allOf" in schema:
            return self.compile(merge_all_of(schema, path, self.root), path)
        if "nullable" in schema:
            rest = {k: v for k, v in schema.items() if k != "nullable"}
            node = self.compile(rest, path)
            return alt(node, literal("null")) if schema["nullable"] is True else node
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return self.compile_any_of(schema, key, path)
        if "enum" in schema or "const" in schema:
            return self.compile_enum(schema, path)
        types = self.types(schema, path)
        if types == ALL_TYPES and not set(schema) - ANNOTATIONS - DEFINITIONS:
            return any_value(self.depth, self.max_whitespace)
        return alt(*(self.compile_type(t, schema, path) for t in types))

    def compile_ref(self, schema: dict, path: str) -> Node:
        ref = schema["$ref"]
        target = resolve_ref(self.root, ref, path)
        expansions = self.ref_counts.get(ref, 0)
        if expansions >= self.depth:
            return NOTHING
        rest = {k: v for k, v in schema.items() if k != "$ref" and k not in ANNOTATIONS | DEFINITIONS}
        self.ref_counts[ref] = expansions + 1
        try:
            if rest:
                return self.compile({"allOf": [target, rest]}, path)
            return self.compile(target, ref)
        finally:
            self.ref_counts[ref] = expansions

    def compile_any_of(self, schema: dict, key: str, path: str) -> Node:
        branches = schema[key]
        if not isinstance(branches, list) or not branches:
            raise SchemaError(f"{key!r} must be a non-empty array", path)
        siblings = {k: v for k, v in schema.items() if k != key and k not in ANNOTATIONS | DEFINITIONS}
        return alt(*(self.compile({"allOf": [siblings, b]} if siblings else b, f"{path}/{key}/{i}")
                     for i, b in enumerate(branches)))

    def compile_enum(self, schema: dict, path: str) -> Node:
        extra = set(schema) - {"enum", "const", "type"} - ANNOTATIONS - DEFINITIONS
        if extra:
            raise SchemaError(f"'enum'/'const' together with {sorted(extra)[0]!r} is not supported", path)
        if "enum" in schema and not isinstance(schema["enum"], list):
            raise SchemaError("'enum' must be an array", path)
        values = schema["enum"] if "enum" in schema else [schema["const"]]
        if "enum" in schema and "const" in schema:
            values = [schema["const"]] if schema["const"] in schema["enum"] else []
        if "type" in schema:
            types = self.types(schema, path)
            values = [v for v in values if any(has_type(v, t) for t in types)]
        return alt(*(value_literal(v, self.ws) for v in values))

    def types(self, schema: dict, path: str) -> tuple[str, ...]:
        declared = schema.get("type")
        if declared is None:
            implied = tuple(t for t, kws in TYPE_KEYWORDS.items() if any(k in schema for k in kws))
            return implied or ALL_TYPES
        names = [declared] if isinstance(declared, str) else declared
        if not isinstance(names, list) or not names:
            raise SchemaError("'type' must be a string or a non-empty array of strings", path)
        for name in names:
            if name not in ALL_TYPES:
                raise SchemaError(f"unknown type {name!r}", path)
        return tuple(dict.fromkeys(names))

    def compile_type(self, name: str, schema: dict, path: str) -> Node:
        if name == "null":
            return literal("null")
        if name == "boolean":
            return alt(literal("true"), literal("false"))
        if name == "integer":
            return integer_range(*integer_bounds(*bounds(schema, path)))
        if name == "number":
            return number_range(*bounds(schema, path))
        if name == "string":
            return self.compile_string(schema, path)
        if name == "array":
            return self.compile_array(schema, path)
        return self.compile_object(schema, path)

    def compile_string(self, schema: dict, path: str) -> Node:
        min_length = count(schema, "minLength", path) or 0
        max_length = count(schema, "maxLength", path)
        pattern, fmt = schema.get("pattern"), schema.get("format")
        if pattern is not None and fmt is not None:
            raise SchemaError("'pattern' together with 'format' is not supported", path)
        if (pattern is not None or fmt is not None) and (min_length or max_length is not None):
            raise SchemaError("'minLength'/'maxLength' together with 'pattern' or 'format' "
                              "is not supported", path)
        if pattern is not None:
            if not isinstance(pattern, str):
                raise SchemaError("'pattern' must be a string", path)
            try:
                return concat(QUOTE, encode_string_content(parse_regex_search(pattern)), QUOTE)
            except RegexError as exc:
                raise SchemaError(f"invalid 'pattern': {exc}", path) from None
        if fmt is not None:
            if fmt not in FORMATS:
                raise SchemaError(f"unsupported JSON Schema format {fmt!r} (supported: "
                                  f"{', '.join(sorted(FORMATS))})", path)
            return _format_string(fmt)
        if max_length is not None and max_length < min_length:
            return NOTHING
        return json_string(min_length, max_length)

    def compile_array(self, schema: dict, path: str) -> Node:
        prefix = schema.get("prefixItems", [])
        items = schema.get("items")
        if isinstance(items, list):  # draft 4-7 tuple form
            prefix, items = items, schema.get("additionalItems", False)
        if not isinstance(prefix, list):
            raise SchemaError("'prefixItems' must be an array of schemas", path)
        if items is None:
            items = False if prefix else True
        prefix_nodes = [self.compile(s, f"{path}/prefixItems/{i}") for i, s in enumerate(prefix)]
        item_node = self.compile(items, f"{path}/items")
        min_items = count(schema, "minItems", path) or 0
        return array_node(prefix_nodes, item_node, min_items, count(schema, "maxItems", path), self.ws)

    def compile_object(self, schema: dict, path: str) -> Node:
        properties = schema.get("properties", {})
        required = schema.get("required", [])
        if not isinstance(properties, dict) or not isinstance(required, list):
            raise SchemaError("'properties' must be an object and 'required' an array", path)
        additional = schema.get("additionalProperties", "properties" not in schema)
        members = []
        for name, sub in properties.items():
            value = self.compile(sub, f"{path}/properties/{name}")
            members.append((member_node(string_literal(name), value, self.ws), name in required))
        for name in required:
            if name not in properties:
                if additional is False:
                    raise SchemaError(f"required property {name!r} is not in 'properties' and "
                                      "additionalProperties is false", path)
                value = self.compile(additional, f"{path}/additionalProperties")
                members.append((member_node(string_literal(name), value, self.ws), True))
        extra = NOTHING
        if additional is not False:
            value = self.compile(additional, f"{path}/additionalProperties")
            extra = member_node(json_string(), value, self.ws)
        return object_node(members, extra, self.ws)


@lru_cache(maxsize=None)
def _format_string(name: str) -> Node:
    return concat(QUOTE, encode_string_content(format_tree(name)), QUOTE)

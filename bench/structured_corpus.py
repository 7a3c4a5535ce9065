"""The schema corpus of the structured-output benchmark: the test corpus plus realistic schemas and regexes.

A BenchCase holds a grammar (JSON Schema or regex), our compile options, and instance texts that
every engine should accept: `json.dumps(value, ensure_ascii=False)` (the default separators, raw
UTF-8: what a model most likely writes) of each valid instance, or the string itself for a regex.
Two realistic schemas use keywords that our compiler refuses by design (`uniqueItems`,
`patternProperties`/`minProperties`): real schemas do, so the support count is honest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from tests.llm_core.structured.corpus import CASES as TEST_CASES

# A spread of features for --quick (the rest of the corpus runs in a full run).
QUICK_CASES = ("person", "enum_mixed", "additional_schema", "any_of", "recursive_tree", "string_lengths",
               "format_date_time", "integer_bounds", "realistic_order", "tool_call", "movie", "log_event",
               "issue_unique_labels", "regex_phone")

_CONTAINER = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"},
        "image": {"type": "string", "minLength": 1},
        "ports": {"type": "array", "maxItems": 8, "items": {
            "type": "object", "properties": {"containerPort": {"type": "integer", "minimum": 1, "maximum": 65535},
                                             "protocol": {"enum": ["TCP", "UDP", "SCTP"]}},
            "required": ["containerPort"], "additionalProperties": False}},
        "env": {"type": "array", "items": {"type": "object", "properties": {
            "name": {"type": "string"}, "value": {"type": "string"}}, "required": ["name"]}},
        "resources": {"type": "object", "properties": {"limits": {"type": "object", "properties": {
            "cpu": {"type": "string", "pattern": "^[0-9]+m?$"},
            "memory": {"type": "string", "pattern": "^[0-9]+(Ki|Mi|Gi)?$"}}}}},
        "restartPolicy": {"enum": ["Always", "OnFailure", "Never"]}},
    "required": ["name", "image"], "additionalProperties": False}

REALISTIC_CASES = [
    dict(name="tool_call", schema={
        "type": "object", "properties": {
            "name": {"const": "get_weather"},
            "arguments": {"type": "object", "properties": {
                "location": {"type": "string", "description": "City and country"},
                "unit": {"enum": ["celsius", "fahrenheit"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 14}},
                "required": ["location"], "additionalProperties": False}},
        "required": ["name", "arguments"], "additionalProperties": False},
        valid=[{"name": "get_weather", "arguments": {"location": "Paris, France", "unit": "celsius", "days": 3}},
               {"name": "get_weather", "arguments": {"location": "São Paulo"}}]),
    dict(name="movie", schema={
        "type": "object", "properties": {
            "title": {"type": "string"}, "year": {"type": "integer", "minimum": 1888, "maximum": 2100},
            "genres": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 5},
            "rating": {"type": "number", "minimum": 0, "maximum": 10},
            "cast": {"type": "array", "items": {"type": "object", "properties": {
                "actor": {"type": "string"}, "role": {"type": "string"}}, "required": ["actor", "role"],
                "additionalProperties": False}},
            "released": {"type": "string", "format": "date"}},
        "required": ["title", "year", "genres"], "additionalProperties": False},
        valid=[{"title": "Le Voyage dans la Lune", "year": 1902, "genres": ["science fiction", "short"],
                "rating": 8.1, "cast": [{"actor": "Georges Méliès", "role": "Professor Barbenfouillis"}],
                "released": "1902-09-01"},
               {"title": "Arrival", "year": 2016, "genres": ["drama"]}]),
    dict(name="user_profile", schema={
        "type": "object", "properties": {
            "id": {"type": "string", "format": "uuid"}, "username": {"type": "string", "pattern": "^[a-z_][a-z0-9_]{2,15}$"},
            "email": {"type": "string", "format": "email"}, "website": {"type": ["string", "null"], "format": "uri"},
            "age": {"type": "integer", "minimum": 13, "maximum": 130},
            "phones": {"type": "array", "items": {"type": "string", "pattern": "^\\+[0-9]{7,15}$"}, "maxItems": 3},
            "address": {"type": "object", "properties": {
                "street": {"type": "string"}, "city": {"type": "string"}, "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
                "country": {"enum": ["US", "FR", "DE", "JP", "BR"]}}, "required": ["city", "country"],
                "additionalProperties": False},
            "last_login": {"type": "string", "format": "date-time"}, "active": {"type": "boolean"}},
        "required": ["id", "username", "email", "active"], "additionalProperties": False},
        valid=[{"id": "0f8fad5b-d9cb-469f-a165-70867728950e", "username": "ada_l", "email": "ada@example.org",
                "website": "https://ada.example.org/", "age": 36, "phones": ["+441234567890"],
                "address": {"street": "12 St James's Sq", "city": "London", "country": "US"},
                "last_login": "2024-03-01T12:00:00Z", "active": True},
               {"id": "7c9e6679-7425-40de-944b-e07fc1f90ae7", "username": "bob", "email": "b@b.io", "active": False}]),
    dict(name="log_event", schema={
        "type": "object", "properties": {
            "timestamp": {"type": "string", "format": "date-time"},
            "level": {"enum": ["DEBUG", "INFO", "WARN", "ERROR"]},
            "service": {"type": "string", "maxLength": 32}, "message": {"type": "string"},
            "trace_id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
            "attributes": {"type": "object", "additionalProperties": {"type": ["string", "number", "boolean"]}}},
        "required": ["timestamp", "level", "message"], "additionalProperties": False},
        valid=[{"timestamp": "2024-11-23T10:15:30.123Z", "level": "ERROR", "service": "gateway",
                "message": "upstream timed out after 30 s", "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
                "attributes": {"http.status_code": 504, "retry": True, "peer": "10.0.0.7"}},
               {"timestamp": "2024-11-23T10:15:31+01:00", "level": "INFO", "message": "ok"}]),
    dict(name="container_spec", schema=_CONTAINER, options={"max_whitespace": 24},
         valid=[{"name": "web-frontend", "image": "nginx:1.27", "ports": [{"containerPort": 80, "protocol": "TCP"}],
                 "env": [{"name": "MODE", "value": "prod"}], "resources": {"limits": {"cpu": "500m", "memory": "256Mi"}},
                 "restartPolicy": "Always"}]),
    dict(name="issue_unique_labels", schema={
        "type": "object", "properties": {
            "title": {"type": "string", "minLength": 1}, "body": {"type": "string"},
            "labels": {"type": "array", "items": {"enum": ["bug", "feature", "docs", "question"]}, "uniqueItems": True},
            "priority": {"type": "integer", "minimum": 0, "maximum": 3}},
        "required": ["title", "labels"]},
        valid=[{"title": "Crash on empty input", "body": "Steps:\n1. send {}\n2. boom", "labels": ["bug"], "priority": 1}]),
    dict(name="config_pattern_properties", schema={
        "type": "object", "properties": {"version": {"const": 2}},
        "patternProperties": {"^x-[a-z]+$": {"type": "object", "properties": {"enabled": {"type": "boolean"}}}},
        "minProperties": 2, "required": ["version"]},
        valid=[{"version": 2, "x-cache": {"enabled": True}}]),
]

REGEX_CASES = [
    dict(name="regex_phone", pattern=r"\+?[0-9]{1,3}[ -]?\(?[0-9]{3}\)?[ -]?[0-9]{3}-[0-9]{4}",
         valid=["+1 (555) 123-4567", "44 020 123-4567"]),
    dict(name="regex_iso_timestamp", pattern=r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?Z",
         valid=["2024-11-23T10:15:30Z", "2024-11-23T10:15:30.123456Z"]),
    dict(name="regex_answer", pattern=r"(yes|no|maybe), because [a-z ,']{10,80}\.",
         valid=["yes, because the ranks file holds every merge.", "no, because it's late at night."]),
]


@dataclass(frozen=True)
class BenchCase:
    name: str
    kind: str                     # "json_schema" or "regex"
    source: object                # the schema (a JSON value) or the pattern
    options: dict = field(default_factory=dict)
    instances: tuple[str, ...] = ()

    @property
    def schema_text(self) -> str:
        return json.dumps(self.source)


def _json_case(case: dict) -> BenchCase:
    texts = tuple(dict.fromkeys(json.dumps(v, ensure_ascii=False) for v in case["valid"]))
    return BenchCase(case["name"], "json_schema", case["schema"], dict(case.get("options", {})), texts)


def load_cases(quick: bool = False) -> list[BenchCase]:
    """The test corpus, then the realistic schemas, then the regexes; only QUICK_CASES with quick."""
    cases = [_json_case(c) for c in (*TEST_CASES, *REALISTIC_CASES)]
    cases += [BenchCase(c["name"], "regex", c["pattern"], {}, tuple(c["valid"])) for c in REGEX_CASES]
    if quick:
        cases = [c for c in cases if c.name in QUICK_CASES]
    return cases

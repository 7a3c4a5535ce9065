"""Errors a user can cause with a response_format; all are ValueErrors with a message to show them."""


class StructuredOutputError(ValueError):
    """Base of every error a schema, pattern or tokenizer can cause in llm_core.structured."""


class RegexError(StructuredOutputError):
    """A pattern that does not parse or uses a construct we do not support."""

    def __init__(self, message: str, pattern: str, position: int):
        super().__init__(f"{message} at position {position} in regex {pattern!r}")
        self.pattern = pattern
        self.position = position


class SchemaError(StructuredOutputError):
    """A JSON Schema that is invalid, uses an unsupported keyword, or allows no instance."""

    def __init__(self, message: str, path: str = "#"):
        super().__init__(f"{message} at {path}")
        self.path = path


class UnsupportedKeywordError(SchemaError):
    def __init__(self, keyword: str, path: str):
        super().__init__(f"unsupported JSON Schema keyword {keyword!r}", path)
        self.keyword = keyword


class GrammarTooLargeError(StructuredOutputError):
    """The automaton would exceed its state budget (huge bounded repeats, very wide schemas)."""

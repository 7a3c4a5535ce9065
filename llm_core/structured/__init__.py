"""Structured output: JSON Schema and regex constraints as token-level automata.

See docs/structured-output.md. Re-exports resolve lazily, so compiling grammars and matching
tokens never imports torch; only the bitmask application does.
"""

import importlib

_EXPORTS = {
    "allocate_token_bitmask": "bitmask", "apply_token_bitmask": "bitmask",
    "apply_token_bitmask_torch": "bitmask",
    "GrammarCompiler": "compiler",
    "GrammarTooLargeError": "errors", "RegexError": "errors", "SchemaError": "errors",
    "StructuredOutputError": "errors", "UnsupportedKeywordError": "errors",
    "Grammar": "grammar", "compile_regex": "grammar",
    "GrammarSpec": "grammar_spec",
    "compile_json_schema": "json_schema",
    "GrammarMatcher": "matcher", "MatcherState": "matcher",
    "CompiledGrammarCache": "token_cache", "compile_for_tokenizer": "token_cache",
    "load_compiled": "token_cache", "save_compiled": "token_cache",
    "CompiledGrammar": "token_grammar",
    "TokenizerInfo": "tokenizer_info",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

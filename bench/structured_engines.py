"""The three structured-output engines of the benchmark behind one small interface, on one vocabulary.

Every engine gets the same token id -> bytes map (our TokenizerInfo of the Qwen BPE: 151,643 byte
tokens, special tokens without bytes), the same EOS id and the same logits width, and fills the
same kind of bitmask (int32 [1, ceil(V/32)], a torch CPU tensor, as an engine would before the copy
to the device). Settings are each engine's defaults as a server would use them:
- ours: compile_for_tokenizer(GrammarSpec, info, cache_dir=None): no disk cache; the in-memory
  caches are cleared before each compile. As in the engine, compiling computes the start state's
  mask and the others are computed on first use; the variant "ours-eager" computes them all
  while compiling (precompute_seconds=None).
- xgrammar: GrammarCompiler(cache_enabled=False), compile_json_schema(any_whitespace=True) as vLLM
  calls it (whitespace unbounded), strict_mode (no undeclared properties).
- outlines-core: build_regex_from_schema (whitespace `[ ]?`) and Index (every state's token set is
  built at compile time).
"""

from __future__ import annotations

import torch

from llm_core.structured import GrammarMatcher, GrammarSpec, TokenizerInfo, compile_for_tokenizer
from llm_core.structured.token_cache import DEFAULT_PRECOMPUTE_SECONDS, MEMORY_CACHE
from llm_core.structured.token_grammar import vocab_trie

from bench.structured_corpus import BenchCase

ENGINES = ("ours", "xgrammar", "outlines-core")
VARIANTS = ("ours-eager",)  # ours computing every mask at compile time, as xgrammar and outlines-core do
WARMUP_CASE = BenchCase("warmup", "json_schema", {"type": "object", "properties": {"a": {"type": "string"}}})


def engine_version(name: str) -> str | None:
    """The installed version, or None when the engine is not installed."""
    from importlib.metadata import PackageNotFoundError, version
    if name in ("ours", *VARIANTS):
        return "tributary"
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}; known: {', '.join((*ENGINES, *VARIANTS))}")
    try:
        return version(name)
    except PackageNotFoundError:
        return None


class Ours:
    def __init__(self, info: TokenizerInfo, precompute_seconds: float | None = DEFAULT_PRECOMPUTE_SECONDS):
        self.info = info
        self.precompute_seconds = precompute_seconds
        vocab_trie(info)  # built once per process and vocabulary, as in the engine

    def compile(self, case: BenchCase):
        from llm_core.structured.grammar import _compile_regex
        from llm_core.structured.json_schema import compile_canonical_schema
        MEMORY_CACHE.clear()
        compile_canonical_schema.cache_clear()
        _compile_regex.cache_clear()
        spec = (GrammarSpec.json_schema(case.source, **case.options) if case.kind == "json_schema"
                else GrammarSpec.regex(case.source))
        return compile_for_tokenizer(spec, self.info, cache_dir=None, precompute_seconds=self.precompute_seconds)

    def matcher(self, compiled):
        return GrammarMatcher(compiled)

    def fill(self, matcher, bitmask: torch.Tensor) -> None:
        matcher.fill_next_token_bitmask(bitmask, 0)

    def accept(self, matcher, token_id: int) -> bool:
        return matcher.accept_token(token_id)


class XGrammar:
    def __init__(self, info: TokenizerInfo, max_threads: int):
        import xgrammar as xgr
        self.xgr = xgr
        self.max_threads = max_threads
        vocab = [b if b is not None else b"" for b in info.token_bytes]   # b"": special, never allowed
        self.tokenizer_info = xgr.TokenizerInfo(vocab, xgr.VocabType.RAW, vocab_size=info.vocab_size,
                                                stop_token_ids=list(info.eos_token_ids))
        self._compiler = None

    def compile(self, case: BenchCase):
        if self._compiler is None:  # made in the process that uses it (its thread pool does not survive fork)
            self._compiler = self.xgr.GrammarCompiler(self.tokenizer_info, max_threads=self.max_threads,
                                                      cache_enabled=False)
        if case.kind == "regex":
            return self._compiler.compile_regex(case.source)
        return self._compiler.compile_json_schema(case.schema_text, any_whitespace=True)

    def matcher(self, compiled):
        return self.xgr.GrammarMatcher(compiled)

    def fill(self, matcher, bitmask: torch.Tensor) -> None:
        matcher.fill_next_token_bitmask(bitmask, 0)

    def accept(self, matcher, token_id: int) -> bool:
        return matcher.accept_token(token_id)


class OutlinesCore:
    def __init__(self, info: TokenizerInfo):
        import outlines_core
        self.oc = outlines_core
        if len(info.eos_token_ids) != 1:
            raise ValueError("outlines-core takes one EOS id")
        self.eos_id = info.eos_token_ids[0]
        tokens: dict[bytes, list[int]] = {}
        for i, data in enumerate(info.token_bytes):
            if data is not None:
                tokens.setdefault(data, []).append(i)
        self.vocabulary = outlines_core.Vocabulary(info.eos_token_ids[0], tokens)

    def regex(self, case: BenchCase) -> str:
        if case.kind == "regex":
            return case.source
        depth = case.options.get("max_recursion_depth", 3)
        return self.oc.json_schema.build_regex_from_schema(case.schema_text, None, depth)

    def compile(self, case: BenchCase):
        return self.oc.Index(self.regex(case), self.vocabulary)

    def matcher(self, compiled):
        return self.oc.Guide(compiled)

    def fill(self, matcher, bitmask: torch.Tensor) -> None:
        matcher.write_mask_into(bitmask.data_ptr(), bitmask.numel(), 4)

    def accept(self, matcher, token_id: int) -> bool:
        if token_id == self.eos_id:  # the Guide has no move on EOS: generation ends where it is final
            return matcher.is_finished()
        try:
            matcher.advance(token_id, False)
        except Exception:  # outlines-core raises on a token it does not allow
            return False
        return True


def make_engine(name: str, info: TokenizerInfo, xgrammar_threads: int):
    """The engine's adapter with its vocabulary set up; ImportError when it is not installed."""
    if name == "ours":
        return Ours(info)
    if name == "ours-eager":
        return Ours(info, precompute_seconds=None)
    if name == "xgrammar":
        return XGrammar(info, xgrammar_threads)
    if name == "outlines-core":
        return OutlinesCore(info)
    raise ValueError(f"unknown engine {name!r}")


def describe_settings(xgrammar_threads: int) -> dict:
    return {"ours": f"compile_for_tokenizer(cache_dir=None, precompute_seconds={DEFAULT_PRECOMPUTE_SECONDS}), "
                    "memory caches cleared per schema: masks but the start state's on first use",
            "ours-eager": "the same with precompute_seconds=None: every mask while compiling",
            "xgrammar": f"GrammarCompiler(max_threads={xgrammar_threads}, cache_enabled=False), "
                        "compile_json_schema(any_whitespace=True)",
            "outlines-core": "build_regex_from_schema(whitespace_pattern=None), Index(regex, vocabulary)",
            "instances": "json.dumps(value, ensure_ascii=False): default separators, raw UTF-8"}

import numpy as np
import pytest

from llm_core.structured import (
    CompiledGrammarCache, GrammarSpec, TokenizerInfo, compile_for_tokenizer, compile_regex, save_compiled,
)
from llm_core.structured.grammar_spec import GrammarSpec as SpecClass


@pytest.fixture(scope="module")
def info(byte_level_tokenizer) -> TokenizerInfo:
    return TokenizerInfo.from_tokenizers(byte_level_tokenizer, [byte_level_tokenizer.token_to_id("<eos>")])


def refuse_to_compile(monkeypatch):
    def fail(self):
        raise AssertionError("compiled although cached")
    monkeypatch.setattr(SpecClass, "compile", fail)


def test_memory_cache_returns_one_object_per_grammar_and_tokenizer(info):
    grammar = compile_regex("[xy]{3}")
    first = compile_for_tokenizer(grammar, info)
    assert compile_for_tokenizer(grammar, info) is first
    other = TokenizerInfo(info.token_bytes, info.eos_token_ids, vocab_size=info.vocab_size + 32)
    assert compile_for_tokenizer(grammar, other) is not first
    assert compile_for_tokenizer(GrammarSpec.regex("[xy]{3}"), info) is first


def test_compiling_computes_the_start_mask_or_more_on_request(info):
    spec = GrammarSpec.json_schema({"type": "object", "properties": {"tag": {"type": "string"}}})
    assert CompiledGrammarCache().get(spec, info).computed_states == [0]
    eager = CompiledGrammarCache().get(spec, info, precompute_seconds=None)
    assert eager.num_states > 1 and eager.computed_states == list(range(eager.num_states))
    regex = compile_for_tokenizer(GrammarSpec.regex("[pq]{2}"), info, precompute_seconds=10)
    assert regex.computed_states == list(range(regex.num_states))


def test_lru_evicts_the_least_recently_used(info):
    cache = CompiledGrammarCache(max_entries=2)
    a, b, c = (cache.get(GrammarSpec.regex(p), info) for p in ["a+", "b+", "c+"])
    assert len(cache) == 2 and cache.lookup(a.key) is None
    cache.lookup(b.key)
    cache.get(GrammarSpec.regex("d+"), info)
    assert cache.lookup(b.key) is b and cache.lookup(c.key) is None


def test_disk_cache_skips_compilation_and_keeps_masks(info, tmp_path, monkeypatch):
    spec = GrammarSpec.json_schema({"type": "object", "properties": {"n": {"type": "integer"}}})
    built = CompiledGrammarCache().get(spec, info, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [f"{built.key}.npz"]
    built.precompute()
    save_compiled(built, tmp_path)
    refuse_to_compile(monkeypatch)
    loaded = CompiledGrammarCache().get(spec, info, tmp_path)
    assert loaded is not built and loaded.key == built.key
    assert loaded.computed_states == list(range(built.num_states))
    for state in range(built.num_states):
        assert np.array_equal(loaded.token_mask(state), built.token_mask(state))
    assert loaded.grammar.matches('{"n": 5}') and not loaded.grammar.matches('{"n": "5"}')


def test_unreadable_or_foreign_files_are_misses(info, tmp_path, caplog):
    spec = GrammarSpec.regex("z{2,4}")
    key = CompiledGrammarCache().get(spec, info, tmp_path).key
    path = tmp_path / f"{key}.npz"
    path.write_bytes(b"not a zip file")
    rebuilt = CompiledGrammarCache().get(spec, info, tmp_path)
    assert rebuilt.grammar.matches("zzz")
    assert "ignoring unreadable grammar cache file" in caplog.text
    other = GrammarSpec.regex("q")
    other_path = CompiledGrammarCache().get(other, info, tmp_path)
    (tmp_path / f"{other_path.key}.npz").replace(path)  # a file under the wrong name
    assert CompiledGrammarCache().get(spec, info, tmp_path).grammar.matches("zz")

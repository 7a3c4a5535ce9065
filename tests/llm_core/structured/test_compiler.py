import threading

import pytest

from llm_core.structured import GrammarCompiler, GrammarSpec, SchemaError, TokenizerInfo


def test_submit_runs_in_the_background_and_deduplicates_keys():
    release = threading.Event()
    calls = []

    def slow():
        calls.append(threading.current_thread().name)
        release.wait(5)
        return 42

    with GrammarCompiler(max_workers=2) as compiler:
        first = compiler.submit("k", slow)
        second = compiler.submit("k", slow)
        assert second is first and not first.done()
        assert compiler.num_pending == 1
        release.set()
        assert first.result(5) == 42
    assert calls and calls[0].startswith("grammar-compile") and len(calls) == 1
    assert compiler.num_pending == 0


def test_errors_arrive_through_the_future_and_the_key_can_be_retried():
    with GrammarCompiler() as compiler:
        spec = GrammarSpec.json_schema({"type": "object", "patternProperties": {}})
        bad = compiler.submit(spec.key, spec.compile)
        with pytest.raises(SchemaError, match="patternProperties"):
            bad.result(5)
        assert compiler.submit(spec.key, lambda: "again").result(5) == "again"


def test_submit_for_tokenizer_compiles_a_token_grammar():
    info = TokenizerInfo.from_vocab(["a", "b", "<eos>"], vocab_type="raw", eos_token_ids=[2])
    with GrammarCompiler() as compiler:
        compiled = compiler.submit_for_tokenizer(GrammarSpec.regex("ab*"), info).result(5)
    assert compiled.grammar.matches("abbb")
    assert compiled.token_mask(0).tolist() == [0b001]

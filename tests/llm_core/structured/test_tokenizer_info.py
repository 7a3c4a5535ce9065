import json

import pytest
from tokenizers import Tokenizer, decoders, models

from llm_core.structured import StructuredOutputError, TokenizerInfo
from llm_core.structured.tokenizer_info import decode_token, detect_vocab_type, gpt2_unicode_to_byte

TEXTS = ['{"name": "Ada", "n": [1, 2.5]}', "héllo wörld ☃ 😀\n\ttabs", "  two  spaces"]


def token_text(info: TokenizerInfo, ids) -> bytes:
    return b"".join(info.token_bytes[i] for i in ids)


def test_gpt2_byte_table_is_a_bijection():
    table = gpt2_unicode_to_byte()
    assert sorted(table.values()) == list(range(256))
    assert table["Ġ"] == 0x20 and table["Ċ"] == 0x0A and table["a"] == ord("a")


def test_byte_level_tokens_concatenate_to_the_text(byte_level_tokenizer):
    eos = byte_level_tokenizer.token_to_id("<eos>")
    info = TokenizerInfo.from_tokenizers(byte_level_tokenizer, eos_token_ids=[eos])
    assert detect_vocab_type(json.loads(byte_level_tokenizer.to_str())) == "byte_level"
    for text in TEXTS:
        ids = byte_level_tokenizer.encode(text).ids
        assert token_text(info, ids) == text.encode()
    for special in ["<eos>", "<pad>", "<|tool|>"]:
        assert info.token_bytes[byte_level_tokenizer.token_to_id(special)] is None
    assert all(info.token_bytes[i] is not None for i in range(3, info.vocab_size))
    assert info.eos_token_ids == (eos,)


def test_metaspace_and_byte_fallback_tokens(metaspace_tokenizer):
    tokenizer = metaspace_tokenizer
    info = TokenizerInfo.from_tokenizers(tokenizer, eos_token_ids=[2])
    assert detect_vocab_type(json.loads(tokenizer.to_str())) == "metaspace"
    for text in TEXTS:
        ids = tokenizer.encode(text).ids
        # The decoder strips the one space that Metaspace prepends; token bytes keep it.
        assert token_text(info, ids) == b" " + tokenizer.decode(ids).encode()
        assert tokenizer.decode(ids) == text.removeprefix(" ") or text.startswith(" ")
    assert info.token_bytes[3 + 0xC3] == b"\xc3"
    assert info.token_bytes[tokenizer.token_to_id("▁h")] == b" h"
    assert info.token_bytes[0] is None and info.token_bytes[2] is None


def test_from_vocab_and_padding_of_the_logits_width():
    info = TokenizerInfo.from_vocab(["a", "b", None, "<eos>", "▁c"], vocab_type="raw", eos_token_ids=[3],
                                    vocab_size=40)
    assert info.token_bytes == (b"a", b"b", None, None, "▁c".encode())
    assert info.vocab_size == 40 and info.bitmask_width == 2
    assert decode_token("▁c", "metaspace") == b" c" and decode_token("<0x0A>", "metaspace") == b"\n"
    assert decode_token("ĠĀ", "byte_level") == b" \x00" and decode_token("☃", "byte_level") is None


def test_vocab_hash_changes_with_anything_masks_depend_on():
    base = TokenizerInfo.from_vocab(["a", "b", "e"], vocab_type="raw", eos_token_ids=[2])
    same = TokenizerInfo.from_vocab(["a", "b", "e"], vocab_type="raw", eos_token_ids=[2])
    assert base.vocab_hash == same.vocab_hash
    for other in [TokenizerInfo.from_vocab(["a", "c", "e"], vocab_type="raw", eos_token_ids=[2]),
                  TokenizerInfo.from_vocab(["a", "b", "e"], vocab_type="raw", eos_token_ids=[1]),
                  TokenizerInfo.from_vocab(["a", "b", "e"], vocab_type="raw", eos_token_ids=[2], vocab_size=64)]:
        assert other.vocab_hash != base.vocab_hash


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="EOS"):
        TokenizerInfo([b"a"], eos_token_ids=[])
    with pytest.raises(ValueError, match="outside"):
        TokenizerInfo([b"a"], eos_token_ids=[5])
    with pytest.raises(ValueError, match="vocab_type"):
        TokenizerInfo.from_vocab(["a"], vocab_type="wordpiece", eos_token_ids=[0])
    wordpiece = Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1, "##b": 2}, unk_token="[UNK]"))
    wordpiece.decoder = decoders.WordPiece()
    with pytest.raises(StructuredOutputError, match="WordPiece"):
        TokenizerInfo.from_tokenizers(wordpiece, eos_token_ids=[0])

"""Tokenizer: loading a checkpoint's tokenizer files, and parity with transformers' AutoTokenizer."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from llm_core.tokenizer import Tokenizer
from tests.helpers.tokenizers import (BOS, CHAT_TEMPLATE, ENDOFTEXT, EOS, IM_END, IM_START, IMAGE_TOKEN, KINDS,
                                      SPECIAL_TOKENS, make_tokenizer_dir)

TEXTS = [
    "", "Hello world", " leading and trailing spaces ", "The quick brown fox jumps over the lazy dog.",
    '{"a": [1, 2.5, -3e4], "b": null, "ok": true}', "naïve café in Zürich", "你好，世界！模型", "👋🌍 👩‍💻 🇫🇷!",
    "tabs\tand\nnewlines\n\n", f"{IM_START}user\nhi{IM_END}\n", f"look {IMAGE_TOKEN} here <audio><video>",
    "unseen: ΩЖא ∑ ǅ 𝔘", "e\u0301 vs é (NFC)", "1234567890 3.14159",
]


def _transformers_tokenizer(path: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


@pytest.fixture(scope="module", params=KINDS)
def pair(request, tmp_path_factory):
    path = make_tokenizer_dir(tmp_path_factory.mktemp(request.param), kind=request.param)
    return Tokenizer.from_dir(path), _transformers_tokenizer(path)


def _write_config(path: Path, **changes) -> None:
    config = json.loads((path / "tokenizer_config.json").read_text())
    config.update(changes)
    (path / "tokenizer_config.json").write_text(json.dumps(config))


# The test helper
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("vocab_size", [400, 512, 1024])
def test_helper_vocab_fits_the_requested_size(tmp_path, kind, vocab_size):
    tokenizer = Tokenizer.from_dir(make_tokenizer_dir(tmp_path, kind=kind, vocab_size=vocab_size))
    assert tokenizer.vocab_size <= vocab_size
    assert all(tokenizer.token_to_id(token) is not None for token in SPECIAL_TOKENS[kind])


def test_helper_rejects_a_vocab_too_small(tmp_path):
    with pytest.raises(ValueError, match="too small"):
        make_tokenizer_dir(tmp_path, kind="metaspace", vocab_size=300)


# Parity with transformers
def test_sizes_and_special_ids_match_transformers(pair):
    ours, theirs = pair
    assert ours.vocab_size == len(theirs)
    assert ours.bos_token_id == theirs.bos_token_id
    assert ours.eos_token_ids[0] == theirs.eos_token_id
    assert ours.all_special_ids == tuple(sorted(theirs.all_special_ids))


@pytest.mark.parametrize("add_special_tokens", [True, False])
def test_encode_matches_transformers(pair, add_special_tokens):
    ours, theirs = pair
    for text in TEXTS:
        assert ours.encode(text, add_special_tokens) == theirs.encode(text, add_special_tokens=add_special_tokens)


@pytest.mark.parametrize("skip_special_tokens", [True, False])
def test_decode_matches_transformers_on_random_ids(pair, skip_special_tokens):
    ours, theirs = pair
    rng = random.Random(0)
    for _ in range(200):
        ids = [rng.randrange(ours.vocab_size) for _ in range(rng.randrange(1, 24))]
        assert ours.decode(ids, skip_special_tokens) == theirs.decode(ids, skip_special_tokens=skip_special_tokens)
        assert ours.convert_ids_to_tokens(ids) == theirs.convert_ids_to_tokens(ids)


def test_encode_decode_round_trips(pair):
    ours, _ = pair
    for text in TEXTS[:2] + TEXTS[3:9] + TEXTS[11:12]:  # sentencepiece does not keep one leading space
        assert ours.decode(ours.encode(text, add_special_tokens=False), skip_special_tokens=False) == text


@pytest.mark.parametrize("add_generation_prompt", [True, False])
def test_chat_template_matches_transformers(pair, add_generation_prompt):
    ours, theirs = pair
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi 👋"},
                {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is this?"}]}]
    expected = theirs.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
    assert ours.apply_chat_template(messages, add_generation_prompt=add_generation_prompt) == expected
    assert IMAGE_TOKEN in expected


def test_config_variants_match_transformers(tmp_path):
    # AddedToken dicts, added_tokens_decoder with a non-special token, a model-specific token,
    # and add_bos_token set against a tokenizer.json without a post-processor.
    path = make_tokenizer_dir(tmp_path, kind="metaspace", vocab_size=480, add_bos=False)
    added = {"lstrip": False, "rstrip": False, "normalized": False, "single_word": False}
    _write_config(path, add_bos_token=True, image_token="<img2>",
                  eos_token={"__type": "AddedToken", "content": EOS, "special": True, **added},
                  added_tokens_decoder={"480": {"content": "<think>", "special": False, **added},
                                        "481": {"content": "<tool>", "special": True, **added}})
    ours, theirs = Tokenizer.from_dir(path), _transformers_tokenizer(path)
    text = "Hi <think> x <tool> y <img2> z"
    ids = ours.encode(text)
    assert ids == theirs.encode(text) and ids[0] != ours.bos_token_id
    assert ours.vocab_size == len(theirs)
    for skip in (True, False):
        assert ours.decode(ids, skip) == theirs.decode(ids, skip_special_tokens=skip)
    template = "{{ image_token }}|{{ eos_token }}|{{ bos_token }}|{{ pad_token }}"
    assert ours.apply_chat_template([{"role": "user", "content": "x"}], chat_template=template) == \
        theirs.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False, chat_template=template)
    assert ours.eos_token_ids == (ours.token_to_id(EOS),)


# Files and configs
def test_missing_tokenizer_json_names_file_and_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="tokenizer.json") as info:
        Tokenizer.from_dir(tmp_path)
    assert str(tmp_path) in str(info.value)


def test_eos_ids_join_generation_config(tmp_path):
    path = make_tokenizer_dir(tmp_path, kind="bytelevel")
    (path / "config.json").write_text(json.dumps({"eos_token_id": 7}))
    tokenizer = Tokenizer.from_dir(path)
    im_end, endoftext = tokenizer.token_to_id(IM_END), tokenizer.token_to_id(ENDOFTEXT)
    assert tokenizer.eos_token_ids == (im_end, 7)  # config.json without generation_config.json
    (path / "generation_config.json").write_text(json.dumps({"eos_token_id": [endoftext, im_end]}))
    assert Tokenizer.from_dir(path).eos_token_ids == (im_end, endoftext)


def test_eos_id_from_a_multimodal_config(tmp_path):
    path = make_tokenizer_dir(tmp_path, kind="metaspace")
    (path / "config.json").write_text(json.dumps({"text_config": {"eos_token_id": 9}}))
    tokenizer = Tokenizer.from_dir(path)
    assert tokenizer.eos_token_ids == (tokenizer.token_to_id(EOS), 9)
    assert tokenizer.bos_token_id == tokenizer.token_to_id(BOS)


def test_chat_template_jinja_file_wins_over_config(tmp_path):
    path = make_tokenizer_dir(tmp_path)
    (path / "chat_template.jinja").write_text("FILE{{ messages[0]['content'] }}")
    assert Tokenizer.from_dir(path).apply_chat_template([{"role": "user", "content": "x"}]) == "FILEx"


def test_chat_template_json_file_is_a_fallback(tmp_path):
    path = make_tokenizer_dir(tmp_path, chat_template=None)
    (path / "chat_template.json").write_text(json.dumps({"chat_template": "JSON{{ messages | length }}"}))
    assert Tokenizer.from_dir(path).apply_chat_template([{"role": "user", "content": "x"}]) == "JSON1"


def test_named_chat_templates(tmp_path):
    path = make_tokenizer_dir(tmp_path, chat_template=None)
    _write_config(path, chat_template=[{"name": "default", "template": "D"}, {"name": "tool_use", "template": "T"},
                                       {"name": "rag", "template": "R"}])
    tokenizer, messages = Tokenizer.from_dir(path), [{"role": "user", "content": "x"}]
    assert tokenizer.apply_chat_template(messages) == "D"
    assert tokenizer.apply_chat_template(messages, tools=[{"name": "f"}]) == "T"
    assert tokenizer.apply_chat_template(messages, chat_template="rag") == "R"
    assert tokenizer.apply_chat_template(messages, chat_template="inline {{ messages[0].role }}") == "inline user"


def test_missing_chat_template_is_a_value_error(tmp_path):
    tokenizer = Tokenizer.from_dir(make_tokenizer_dir(tmp_path, chat_template=None))
    with pytest.raises(ValueError, match="no chat template"):
        tokenizer.apply_chat_template([{"role": "user", "content": "x"}])


def test_default_template_renders_media_placeholders(tmp_path):
    tokenizer = Tokenizer.from_dir(make_tokenizer_dir(tmp_path, kind="metaspace"))
    content = [{"type": "text", "text": "a"}, {"type": "audio"}, {"type": "video"}]
    text = tokenizer.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=False)
    assert text == f"{BOS}{IM_START}user\na<audio><video>{IM_END}\n"
    assert tokenizer.chat_template == CHAT_TEMPLATE

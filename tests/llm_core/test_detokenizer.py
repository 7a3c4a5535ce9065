"""Incremental detokenizer: deltas equal decode(), incomplete characters held back, stop strings."""

from __future__ import annotations

import random

import pytest

from llm_core.detokenizer import IncrementalDetokenizer
from llm_core.tokenizer import Tokenizer
from tests.helpers.tokenizers import KINDS, make_tokenizer_dir

FFFD = "\ufffd"
TEXTS = ["Hello, world! 你好，世界！今天天气很好。", "Emoji: 👋 🌍 🎉 👩‍💻 🇫🇷 done.", "Café naïve Zürich crème brûlée",
         '{"name": "Ada", "tags": ["math"], "ratio": 0.75}', "模型输出流式文本 🚀 and 12:45 $3,199.99"]


@pytest.fixture(scope="module", params=KINDS)
def tokenizer(request, tmp_path_factory) -> Tokenizer:
    return Tokenizer.from_dir(make_tokenizer_dir(tmp_path_factory.mktemp(request.param), kind=request.param))


@pytest.fixture(scope="module")
def metaspace(tmp_path_factory) -> Tokenizer:
    return Tokenizer.from_dir(make_tokenizer_dir(tmp_path_factory.mktemp("metaspace"), kind="metaspace"))


def _random_ids(tokenizer: Tokenizer, rng: random.Random) -> list[int]:
    if rng.random() < 0.5:  # anything at all: lone continuation bytes, specials, byte runs
        return [rng.randrange(tokenizer.vocab_size) for _ in range(rng.randrange(1, 40))]
    ids = tokenizer.encode(rng.choice(TEXTS), add_special_tokens=False)
    for _ in range(rng.randrange(4)):  # real text with stray tokens that may split a character
        ids.insert(rng.randrange(len(ids) + 1), rng.randrange(tokenizer.vocab_size))
    return ids


def _stream(detok: IncrementalDetokenizer, ids: list[int], rng: random.Random | None = None) -> list[str]:
    deltas, i = [], 0
    while i < len(ids):
        step = rng.choice([1, 1, 1, 2, 4]) if rng else 1
        deltas.append(detok.add_tokens(ids[i:i + step]))
        i += step
    return deltas


@pytest.mark.parametrize("skip_special_tokens", [True, False])
def test_deltas_concatenate_to_decode_on_random_ids(tokenizer, skip_special_tokens):
    rng = random.Random(1)
    for _ in range(1000):
        ids = _random_ids(tokenizer, rng)
        expected = tokenizer.decode(ids, skip_special_tokens)
        detok = IncrementalDetokenizer(tokenizer, [1, 2, 3], skip_special_tokens=skip_special_tokens)
        emitted = ""
        for delta in _stream(detok, ids, rng):
            emitted += delta
            assert expected.startswith(emitted), (ids, emitted, expected)  # no U+FFFD decode() lacks
        emitted += detok.flush()
        assert emitted == expected == detok.text, ids


def test_characters_are_released_as_soon_as_they_are_complete(tokenizer):
    num_split = 0
    for text in TEXTS:
        ids = tokenizer.encode(text, add_special_tokens=False)
        detok = IncrementalDetokenizer(tokenizer, [])
        emitted = ""
        for k, delta in enumerate(_stream(detok, ids), start=1):
            assert FFFD not in delta
            emitted += delta
            so_far = tokenizer.decode(ids[:k])
            if so_far.endswith(FFFD) or ids[k - 1] in tokenizer.byte_token_ids:
                num_split += 1  # the token ends inside a character (or inside a byte-fallback run)
                assert len(emitted) < len(so_far)
            else:
                assert emitted == so_far
        assert emitted + detok.flush() == text
    assert num_split > 0


def test_a_byte_run_is_held_until_it_ends(metaspace):
    byte = {b: metaspace.token_to_id(f"<0x{b:02X}>") for b in (0x41, 0x80, 0xE4, 0xB8, 0x96)}
    word = metaspace.encode("world", add_special_tokens=False)
    detok = IncrementalDetokenizer(metaspace, [])
    # "A" is valid alone, but a lone continuation byte after it turns the whole run into U+FFFD.
    assert detok.add_tokens([byte[0x41]]) == ""
    assert detok.add_tokens([byte[0x80]]) == ""
    assert detok.add_tokens(word) == metaspace.decode([byte[0x41], byte[0x80], *word]) == FFFD * 2 + " world"
    assert detok.add_tokens([byte[0xE4], byte[0xB8]]) == ""
    assert detok.add_tokens([byte[0x96]]) == ""
    assert detok.flush() == "世"


def test_each_step_decodes_a_short_window(tokenizer):
    ids = tokenizer.encode(" ".join(TEXTS * 40), add_special_tokens=False)
    window_sizes = []
    decode = tokenizer.decode

    class Recording:
        byte_token_ids, skipped_token_ids = tokenizer.byte_token_ids, tokenizer.skipped_token_ids

        def decode(self, token_ids, skip_special_tokens=True):
            window_sizes.append(len(token_ids))
            return decode(token_ids, skip_special_tokens)

    detok = IncrementalDetokenizer(Recording(), [])
    assert "".join(_stream(detok, ids)) + detok.flush() == decode(ids)
    # A window is the last committed piece plus the new tokens (a run of byte tokens counts as
    # one piece), so its size depends on the text's shape, not on its length.
    assert len(ids) > 1000 and max(window_sizes) <= 32


# Stop strings
@pytest.mark.parametrize("include", [False, True])
def test_random_stop_strings_cut_at_their_first_occurrence(tokenizer, include):
    rng = random.Random(2)
    for _ in range(500):
        ids = _random_ids(tokenizer, rng)
        full = tokenizer.decode(ids)
        start = rng.randrange(max(1, len(full)))
        stop = full[start:start + rng.randrange(1, 6)] or "x"
        detok = IncrementalDetokenizer(tokenizer, [], stop=[stop], include_stop_str_in_output=include)
        streamed = "".join(_stream(detok, ids, rng)) + detok.flush()
        index = full.find(stop)
        expected = full if index < 0 else full[:index + (len(stop) if include else 0)]
        assert streamed == detok.text == expected, (ids, stop)
        assert detok.stop_reason == (stop if index >= 0 else None)


def _run(tokenizer: Tokenizer, text: str, stop, include: bool = False, step: int = 1):
    ids = tokenizer.encode(text, add_special_tokens=False)
    detok = IncrementalDetokenizer(tokenizer, [], stop=stop, include_stop_str_in_output=include)
    deltas = [detok.add_tokens(ids[i:i + step]) for i in range(0, len(ids), step)]
    return detok, "".join(deltas), detok.flush()


def test_stop_string_truncates_the_text(tokenizer):
    detok, streamed, flushed = _run(tokenizer, "The quick brown fox jumps over the lazy dog.", ["brown fox"])
    assert (streamed, flushed, detok.text) == ("The quick ", "", "The quick ")
    assert detok.is_stopped and detok.stop_reason == "brown fox"
    assert detok.add_tokens(tokenizer.encode(" more", add_special_tokens=False)) == ""
    assert detok.text == "The quick "


def test_stop_string_included_in_output(tokenizer):
    detok, streamed, flushed = _run(tokenizer, "Hello, world! 你好，世界！", ["世界"], include=True)
    assert streamed + flushed == detok.text == "Hello, world! 你好，世界"
    assert detok.stop_reason == "世界"


def test_earliest_of_several_stop_strings_wins(tokenizer):
    detok, streamed, _ = _run(tokenizer, '{"name": "Ada", "age": 36}', ['"age"', "Ada", "}"], step=100)
    assert streamed == '{"name": "'
    assert detok.stop_reason == "Ada"


def test_stop_string_spanning_many_tokens(tokenizer):
    text = "Emoji: 👋 🌍 🎉 done."
    stop = "🌍 🎉 do"
    assert len(tokenizer.encode(stop, add_special_tokens=False)) > 3
    detok, streamed, flushed = _run(tokenizer, text, [stop, "never"])
    assert streamed + flushed == "Emoji: 👋 " and detok.stop_reason == stop


def test_possible_stop_prefix_is_held_back_until_flush(tokenizer):
    text = "Hello, world! The quick brown fox."
    detok, streamed, flushed = _run(tokenizer, text, ["XYZ", "fox!"])
    assert not detok.is_stopped
    assert streamed == text[:-3] and flushed == text[-3:]  # len("fox!") - 1 characters held back
    assert detok.flush() == ""


def test_without_stop_strings_nothing_is_held_back(tokenizer):
    detok, streamed, flushed = _run(tokenizer, "Hello, world!", [""])
    assert (streamed, flushed) == ("Hello, world!", "")


def test_stop_string_in_text_released_by_flush(metaspace):
    # "世" reaches the vocabulary only through byte fallback, so it stays undecoded until flush().
    ids = metaspace.encode("ok 世", add_special_tokens=False)
    assert ids[-1] in metaspace.byte_token_ids
    detok = IncrementalDetokenizer(metaspace, [], stop=["世"])
    assert "".join(detok.add_tokens([i]) for i in ids) == "ok "
    assert not detok.is_stopped
    assert detok.flush() == "" and detok.stop_reason == "世" and detok.text == "ok "

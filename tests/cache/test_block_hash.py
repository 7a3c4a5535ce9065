"""Tests of cache/block_hash.py: chained, deterministic block hashes with media keys."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cache.block_hash import (
    BLOCK_HASH_NUM_BYTES,
    MediaSpan,
    extend_block_hashes,
    hash_block_tokens,
)


def test_hash_is_16_bytes_and_deterministic_across_processes():
    digest = hash_block_tokens(None, [1, 2, 3, 4], ("img", 7))
    assert isinstance(digest, bytes) and len(digest) == BLOCK_HASH_NUM_BYTES
    code = (
        "from cache.block_hash import hash_block_tokens;"
        "print(hash_block_tokens(None, [1, 2, 3, 4], ('img', 7)).hex())"
    )
    # Another process with another str-hash salt must agree.
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    other = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[2],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert other == digest.hex()


def test_parent_tokens_and_extra_keys_all_change_the_hash():
    base = hash_block_tokens(None, [1, 2, 3, 4])
    parent = hash_block_tokens(None, [9, 9, 9, 9])
    variants = [
        hash_block_tokens(parent, [1, 2, 3, 4]),
        hash_block_tokens(None, [1, 2, 3, 5]),
        hash_block_tokens(None, [1, 2, 3, 4], ("a",)),
        hash_block_tokens(None, [1, 2, 3, 4], (b"a",)),
        hash_block_tokens(None, [1, 2, 3, 4], (1,)),
        hash_block_tokens(None, [1, 2, 3, 4], (True,)),
        hash_block_tokens(None, [1, 2, 3, 4], (("a", 1),)),
        hash_block_tokens(None, [1, 2, 3, 4], ("a", 1)),
    ]
    assert len({base, *variants}) == 1 + len(variants)
    assert hash_block_tokens(None, [1, 2, 3, 4], ()) == base


def test_unsupported_extra_key_and_bad_parent_raise():
    with pytest.raises(TypeError, match="unsupported extra key"):
        hash_block_tokens(None, [1], (object(),))
    with pytest.raises(ValueError, match="16 bytes"):
        hash_block_tokens(b"short", [1])


def test_extend_is_incremental_and_skips_the_partial_block():
    tokens = list(range(10))
    hashes: list[bytes] = []
    extend_block_hashes(hashes, tokens, block_size=4)
    assert len(hashes) == 2  # tokens 8, 9 form a partial block
    assert hashes[0] == hash_block_tokens(None, tokens[0:4])
    assert hashes[1] == hash_block_tokens(hashes[0], tokens[4:8])
    first_two = list(hashes)
    tokens += [10, 11, 12]
    extend_block_hashes(hashes, tokens, block_size=4)
    assert hashes[:2] == first_two
    assert hashes[2] == hash_block_tokens(hashes[1], tokens[8:12])
    extend_block_hashes(hashes, tokens, block_size=4)
    assert len(hashes) == 3


def test_media_content_changes_hashes_of_overlapping_blocks_only():
    placeholder = 99
    tokens = [1, 2, 3, 4] + [placeholder] * 6 + [5, 6, 7, 8, 9, 10]  # span at 4..9
    span_a = MediaSpan(offset=4, length=6, content_hash="cat")
    span_b = MediaSpan(offset=4, length=6, content_hash="dog")
    hashes_a: list[bytes] = []
    hashes_b: list[bytes] = []
    plain: list[bytes] = []
    extend_block_hashes(hashes_a, tokens, 4, [span_a])
    extend_block_hashes(hashes_b, tokens, 4, [span_b])
    extend_block_hashes(plain, tokens, 4)
    assert hashes_a[0] == hashes_b[0] == plain[0]  # block 0 precedes the span
    assert hashes_a[1] != hashes_b[1] and hashes_a[1] != plain[1]
    assert hashes_a[2] != hashes_b[2]
    assert hashes_a[1] == hash_block_tokens(hashes_a[0], tokens[4:8], (("cat", 0),))
    assert hashes_a[2] == hash_block_tokens(hashes_a[1], tokens[8:12], (("cat", 4),))


def test_media_alignment_inside_a_block_matters():
    tokens = [7] * 8
    at_0: list[bytes] = []
    at_1: list[bytes] = []
    extend_block_hashes(at_0, tokens, 8, [MediaSpan(0, 4, "x")])
    extend_block_hashes(at_1, tokens, 8, [MediaSpan(1, 4, "x")])
    assert at_0 != at_1


def test_overlapping_spans_and_bad_spans_raise():
    with pytest.raises(ValueError, match="overlap"):
        extend_block_hashes([], [0] * 8, 4, [MediaSpan(0, 4, "a"), MediaSpan(3, 2, "b")])
    with pytest.raises(ValueError, match="length"):
        MediaSpan(0, 0, "a")
    with pytest.raises(ValueError, match="content_hash"):
        MediaSpan(0, 1, "")

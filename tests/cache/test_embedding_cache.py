"""The embedding cache: content keys, hits and misses, LRU eviction within the byte budget."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cache.embedding_cache import EmbeddingCache, content_key

ROOT = Path(__file__).resolve().parents[2]


def key_of(array: np.ndarray, encoder_id: str = "enc", settings: str = "") -> str:
    return content_key(array, shape=array.shape, dtype=str(array.dtype), encoder_id=encoder_id, settings=settings)


def value(num_bytes: int) -> np.ndarray:
    return np.zeros(num_bytes, dtype=np.uint8)


def test_equal_content_gives_equal_keys_and_any_difference_another():
    image = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    key = key_of(image)
    assert key == key_of(image.copy()) and len(key) == 64 and int(key, 16) >= 0
    changed = image.copy()
    changed[1, 2, 2] ^= 1
    others = {key_of(changed), key_of(image.reshape(3, 2, 3)), key_of(image.view(np.int8)),
              key_of(image, encoder_id="enc2"), key_of(image, settings="pool_stride=2")}
    assert key not in others and len(others) == 5


def test_fields_cannot_run_into_each_other():
    data = np.zeros(4, dtype=np.uint8)
    assert content_key(data, shape=(4,), dtype="uint8", encoder_id="ab", settings="c") != \
        content_key(data, shape=(4,), dtype="uint8", encoder_id="a", settings="bc")


def test_non_contiguous_data_is_refused():
    with pytest.raises(ValueError, match="contiguous"):
        key_of(np.zeros((4, 4), dtype=np.uint8)[:, ::2])


def test_second_identical_input_hits():
    cache = EmbeddingCache(capacity_bytes=1000)
    image = np.ones((4, 4, 3), dtype=np.uint8)
    assert cache.get(key_of(image)) is None
    embeddings = value(100)
    assert cache.put(key_of(image), embeddings)
    assert cache.get(key_of(image.copy())) is embeddings
    assert (cache.num_hits, cache.num_misses, len(cache), cache.num_bytes) == (1, 1, 1, 100)


def test_least_recently_used_entry_is_evicted_first():
    cache = EmbeddingCache(capacity_bytes=300)
    for key in "abc":
        assert cache.put(key, value(100))
    assert cache.get("a") is not None  # now b is the least recently used
    assert cache.contains("b")  # contains() does not count as a use
    cache.put("d", value(100))
    assert not cache.contains("b") and all(cache.contains(key) for key in "acd")
    cache.put("e", value(150))  # needs two evictions: c, then a
    assert sorted(cache._entries) == ["d", "e"] and cache.num_bytes == 250 and cache.num_evictions == 3


def test_replacing_an_entry_updates_the_bytes():
    cache = EmbeddingCache(capacity_bytes=300)
    cache.put("a", value(200))
    cache.put("a", value(50))
    assert cache.num_bytes == 50 and len(cache) == 1 and cache.num_evictions == 0


def test_a_value_larger_than_the_budget_is_not_stored():
    cache = EmbeddingCache(capacity_bytes=100)
    cache.put("small", value(60))
    assert not cache.put("big", value(101))
    assert not cache.contains("big") and cache.contains("small") and cache.num_bytes == 60


def test_values_are_sized_by_nbytes_of_tensors_and_sequences():
    cache = EmbeddingCache(capacity_bytes=1000)
    cache.put("pair", (np.zeros(10, dtype=np.float32), np.zeros(5, dtype=np.float64)))
    assert cache.num_bytes == 80
    with pytest.raises(TypeError, match="nbytes"):
        cache.put("opaque", object())
    cache.clear()
    assert len(cache) == 0 and cache.num_bytes == 0


def test_capacity_must_be_a_non_negative_integer():
    with pytest.raises(ValueError, match="capacity_bytes"):
        EmbeddingCache(capacity_bytes=-1)
    with pytest.raises(ValueError, match="capacity_bytes"):
        EmbeddingCache(capacity_bytes=1.5)


def test_the_cache_module_does_not_load_torch():
    code = "import sys, cache.embedding_cache; assert 'torch' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr

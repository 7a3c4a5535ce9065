"""Tests of cache/block_pool.py: reference counts, LRU free queue, cached map, eviction."""

import pytest

from cache.block_hash import hash_block_tokens
from cache.block_pool import NULL_BLOCK_ID, BlockPool


def _hash(n: int) -> bytes:
    return hash_block_tokens(None, [n])


def _queue_ids(pool: BlockPool) -> list[int]:
    return [block.block_id for block in pool.free_queue]


def test_null_block_is_never_handed_out():
    pool = BlockPool(num_blocks=5, enable_caching=True)
    assert pool.get_num_free_blocks() == 4
    blocks = pool.allocate(4)
    assert sorted(block.block_id for block in blocks) == [1, 2, 3, 4]
    assert all(block.ref_cnt == 1 for block in blocks)
    assert pool.usage == 1.0
    with pytest.raises(ValueError, match="only 0 are free"):
        pool.allocate(1)
    with pytest.raises(RuntimeError, match="null block"):
        pool.free([pool.blocks[NULL_BLOCK_ID]])


def test_allocate_too_many_changes_nothing():
    pool = BlockPool(num_blocks=4, enable_caching=True)
    with pytest.raises(ValueError, match="cannot allocate 4"):
        pool.allocate(4)
    assert pool.get_num_free_blocks() == 3 and _queue_ids(pool) == [1, 2, 3]


def test_free_appends_in_given_order_and_ref_counts():
    pool = BlockPool(num_blocks=6, enable_caching=True)
    a, b, c = pool.allocate(3)
    pool.touch([b])
    assert b.ref_cnt == 2
    pool.free([c, b, a])
    assert b.ref_cnt == 1
    assert _queue_ids(pool) == [4, 5, c.block_id, a.block_id]
    pool.free([b])
    assert _queue_ids(pool)[-1] == b.block_id
    with pytest.raises(RuntimeError, match="freed more often"):
        pool.free([b])
    assert pool.usage == 0.0


def test_freed_cached_block_stays_findable_until_reallocated():
    pool = BlockPool(num_blocks=3, enable_caching=True)
    first, second = pool.allocate(2)
    pool.cache_full_block(first, _hash(1))
    pool.free([second, first])  # queue: second, first
    assert pool.get_cached_block(_hash(1)) is first
    assert first.block_hash == _hash(1)
    [popped] = pool.allocate(1)
    assert popped is second and pool.num_evictions == 0
    [popped] = pool.allocate(1)
    assert popped is first and first.block_hash is None
    assert pool.get_cached_block(_hash(1)) is None
    assert pool.num_evictions == 1


def test_touching_a_free_cached_block_removes_it_from_the_queue():
    pool = BlockPool(num_blocks=4, enable_caching=True)
    blocks = pool.allocate(3)
    pool.cache_full_block(blocks[1], _hash(7))
    pool.free(blocks)
    assert pool.get_num_free_blocks() == 3
    pool.touch([pool.get_cached_block(_hash(7))])
    assert blocks[1].ref_cnt == 1
    assert _queue_ids(pool) == [blocks[0].block_id, blocks[2].block_id]
    assert [b.block_id for b in pool.allocate(2)] == [blocks[0].block_id, blocks[2].block_id]
    assert pool.get_cached_block(_hash(7)) is blocks[1]


def test_duplicate_hash_keeps_existing_mapping():
    pool = BlockPool(num_blocks=4, enable_caching=True)
    a, b = pool.allocate(2)
    pool.cache_full_block(a, _hash(1))
    pool.cache_full_block(b, _hash(1))
    pool.cache_full_block(a, _hash(1))  # idempotent
    assert pool.get_cached_block(_hash(1)) is a
    with pytest.raises(RuntimeError, match="another hash"):
        pool.cache_full_block(a, _hash(2))
    pool.free([b, a])
    pool.allocate(2)  # evicts the free block 3 (no hash), then b: mapping to a must survive
    assert pool.get_cached_block(_hash(1)) is a


def test_caching_disabled_never_records_hashes():
    pool = BlockPool(num_blocks=3, enable_caching=False)
    [block] = pool.allocate(1)
    pool.cache_full_block(block, _hash(1))
    assert block.block_hash is None and pool.get_cached_block(_hash(1)) is None


def test_reset_prefix_cache_refused_while_blocks_in_use():
    pool = BlockPool(num_blocks=3, enable_caching=True)
    [block] = pool.allocate(1)
    pool.cache_full_block(block, _hash(1))
    assert pool.reset_prefix_cache() is False
    assert pool.get_cached_block(_hash(1)) is block
    pool.free([block])
    assert pool.reset_prefix_cache() is True
    assert pool.get_cached_block(_hash(1)) is None and block.block_hash is None


def test_pool_needs_two_blocks():
    with pytest.raises(ValueError, match="num_blocks must be >= 2"):
        BlockPool(num_blocks=1, enable_caching=True)

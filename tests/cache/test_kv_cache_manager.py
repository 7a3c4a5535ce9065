"""Tests of cache/kv_cache_manager.py: block tables, prefix hits, eviction order, stats."""

import random

import pytest

from cache.block_hash import MediaSpan, extend_block_hashes
from cache.block_pool import NULL_BLOCK_ID
from cache.kv_cache_manager import KVCacheManager, PrefixHit

BLOCK_SIZE = 4


def _hashes(token_ids, media_spans=()):
    block_hashes: list[bytes] = []
    extend_block_hashes(block_hashes, token_ids, BLOCK_SIZE, media_spans)
    return block_hashes


def _run_prefill(manager, request_id, token_ids, media_spans=()):
    """What the scheduler does for a new request computed in one step; returns the hit."""
    block_hashes = _hashes(token_ids, media_spans)
    hit = manager.find_prefix_hit(block_hashes, len(token_ids), record_stats=True)
    assert manager.allocate_slots(request_id, len(token_ids), hit) is not None
    manager.cache_blocks(request_id, block_hashes, len(token_ids))
    return hit


def test_allocate_grows_by_ceil_division_and_returns_new_ids():
    manager = KVCacheManager(num_blocks=10, block_size=BLOCK_SIZE)
    first = manager.allocate_slots("r", 5)
    assert len(first) == 2 and NULL_BLOCK_ID not in first
    assert manager.allocate_slots("r", 8) == []
    third = manager.allocate_slots("r", 9)
    assert len(third) == 1 and manager.get_block_ids("r") == first + third
    assert manager.num_free_blocks == 6 and manager.usage == pytest.approx(3 / 9)
    manager.free("r")
    assert manager.num_free_blocks == 9
    with pytest.raises(KeyError):
        manager.get_block_ids("r")


def test_free_of_unknown_request_is_a_noop():
    manager = KVCacheManager(num_blocks=4, block_size=BLOCK_SIZE)
    manager.allocate_slots("a", 4)
    manager.free("never-seen")
    assert manager.num_free_blocks == 2 and len(manager.get_block_ids("a")) == 1


def test_prefix_hit_across_two_requests_shares_blocks():
    manager = KVCacheManager(num_blocks=20, block_size=BLOCK_SIZE)
    shared = list(range(100, 112))  # 3 full blocks
    _run_prefill(manager, "a", shared + [1, 2, 3])
    hit = _run_prefill(manager, "b", shared + [7, 8])
    assert hit.num_cached_tokens == 12
    assert hit.block_ids == tuple(manager.get_block_ids("a")[:3])
    assert manager.get_block_ids("b")[:3] == manager.get_block_ids("a")[:3]
    assert manager.get_block_ids("b")[3] != manager.get_block_ids("a")[3]
    assert all(manager.block_pool.blocks[i].ref_cnt == 2 for i in hit.block_ids)
    assert manager.prefix_cache_stats == (15 + 14, 12)


def test_hit_is_capped_below_the_whole_prompt():
    manager = KVCacheManager(num_blocks=20, block_size=BLOCK_SIZE)
    tokens = list(range(8))  # exactly 2 full blocks
    _run_prefill(manager, "a", tokens)
    manager.free("a")
    hit = manager.find_prefix_hit(_hashes(tokens), len(tokens))
    assert hit.num_cached_tokens == 4  # the last token must be computed: 7 tokens -> 1 block
    longer = manager.find_prefix_hit(_hashes(tokens + [50]), 9)
    assert longer.num_cached_tokens == 8


def test_partial_last_block_is_never_cached():
    manager = KVCacheManager(num_blocks=20, block_size=BLOCK_SIZE)
    manager.allocate_slots("a", 6)
    manager.cache_blocks("a", _hashes(list(range(6))), 6)
    last = manager.block_pool.blocks[manager.get_block_ids("a")[1]]
    assert last.block_hash is None and len(manager.block_pool.cached_blocks) == 1


def test_cache_blocks_only_registers_computed_blocks_and_is_idempotent():
    manager = KVCacheManager(num_blocks=20, block_size=BLOCK_SIZE)
    tokens = list(range(12))
    block_hashes = _hashes(tokens)
    manager.allocate_slots("a", 12)
    manager.cache_blocks("a", block_hashes, 7)  # chunked prefill: only block 0 is computed
    assert len(manager.block_pool.cached_blocks) == 1
    for _ in range(2):
        manager.cache_blocks("a", block_hashes, 12)
    assert len(manager.block_pool.cached_blocks) == 3
    with pytest.raises(ValueError, match="owns only"):
        manager.cache_blocks("a", block_hashes, 16)
    with pytest.raises(KeyError):
        manager.cache_blocks("zzz", block_hashes, 4)


def test_media_extra_keys_prevent_false_hits():
    manager = KVCacheManager(num_blocks=20, block_size=BLOCK_SIZE)
    tokens = [1, 2, 3, 4] + [99] * 8 + [5]
    _run_prefill(manager, "cat", tokens, [MediaSpan(4, 8, "cat")])
    dog = manager.find_prefix_hit(_hashes(tokens, [MediaSpan(4, 8, "dog")]), len(tokens))
    same = manager.find_prefix_hit(_hashes(tokens, [MediaSpan(4, 8, "cat")]), len(tokens))
    assert (dog.num_cached_tokens, same.num_cached_tokens) == (4, 12)  # dog: text block only


def test_eviction_is_lru_and_tail_first():
    manager = KVCacheManager(num_blocks=7, block_size=BLOCK_SIZE)
    _run_prefill(manager, "old", list(range(0, 12)))  # 3 cached blocks
    _run_prefill(manager, "new", list(range(50, 62)))  # 3 cached blocks
    old_ids = manager.get_block_ids("old")
    manager.free("old")
    manager.free("new")
    # Queue: old tail..head, then new tail..head. Taking 2 evicts old's last two blocks.
    new_ids = manager.allocate_slots("x", 8)
    assert new_ids == [old_ids[2], old_ids[1]]
    assert manager.find_prefix_hit(_hashes(list(range(0, 12))), 13).num_cached_tokens == 4
    assert manager.find_prefix_hit(_hashes(list(range(50, 62))), 13).num_cached_tokens == 12
    assert manager.block_pool.num_evictions == 2


def test_hit_on_free_blocks_counts_against_free_space_and_none_changes_nothing():
    manager = KVCacheManager(num_blocks=5, block_size=BLOCK_SIZE)  # 4 usable
    tokens = list(range(8))
    _run_prefill(manager, "a", tokens)
    manager.free("a")
    prompt = tokens + list(range(20, 31))  # 19 tokens: 5 blocks, 2 of them cached
    hit = manager.find_prefix_hit(_hashes(prompt), len(prompt))
    assert hit.num_cached_tokens == 8
    # 3 new + 2 hit blocks taken out of the free queue = 5 > 4 free.
    assert manager.allocate_slots("b", len(prompt), hit) is None
    assert manager.num_free_blocks == 4
    assert all(manager.block_pool.blocks[i].ref_cnt == 0 for i in hit.block_ids)
    with pytest.raises(KeyError):
        manager.get_block_ids("b")
    new_ids = manager.allocate_slots("b", 16, hit)
    assert len(new_ids) == 2
    assert manager.get_block_ids("b")[:2] == list(hit.block_ids)
    assert manager.num_free_blocks == 0


def test_preempted_request_reuses_its_cached_blocks():
    manager = KVCacheManager(num_blocks=10, block_size=BLOCK_SIZE)
    tokens = list(range(10))
    _run_prefill(manager, "r", tokens)
    before = manager.get_block_ids("r")[:2]
    manager.free("r")  # preemption
    hit = _run_prefill(manager, "r", tokens)
    assert list(hit.block_ids) == before == manager.get_block_ids("r")[:2]


def test_misused_prefix_hits_raise():
    manager = KVCacheManager(num_blocks=10, block_size=BLOCK_SIZE)
    tokens = list(range(9))
    _run_prefill(manager, "a", tokens)
    hit = manager.find_prefix_hit(_hashes(tokens), 9)
    with pytest.raises(ValueError, match="already has blocks"):
        manager.allocate_slots("a", 12, hit)
    with pytest.raises(ValueError, match="inconsistent"):
        manager.allocate_slots("b", 12, PrefixHit(hit.block_ids, 5))
    manager.free("a")
    manager.allocate_slots("c", 4 * 9)  # evicts every cached block
    with pytest.raises(ValueError, match="stale"):
        manager.allocate_slots("b", 12, hit)


def test_stats_only_when_asked_and_disabled_caching():
    manager = KVCacheManager(num_blocks=10, block_size=BLOCK_SIZE)
    tokens = list(range(9))
    _run_prefill(manager, "a", tokens)
    manager.find_prefix_hit(_hashes(tokens), 9)
    assert manager.prefix_cache_stats == (9, 0)
    manager.find_prefix_hit(_hashes(tokens), 9, record_stats=True)
    assert manager.prefix_cache_stats == (18, 8)

    disabled = KVCacheManager(num_blocks=10, block_size=BLOCK_SIZE, enable_prefix_caching=False)
    _run_prefill(disabled, "a", tokens)
    assert disabled.find_prefix_hit(_hashes(tokens), 9) == PrefixHit((), 0)
    assert disabled.block_pool.cached_blocks == {}
    assert disabled.prefix_cache_stats == (0, 0)


def test_reset_prefix_cache():
    manager = KVCacheManager(num_blocks=10, block_size=BLOCK_SIZE)
    _run_prefill(manager, "a", tokens := list(range(9)))
    assert manager.reset_prefix_cache() is False
    manager.free("a")
    assert manager.reset_prefix_cache() is True
    assert manager.find_prefix_hit(_hashes(tokens), 9).num_cached_tokens == 0


def _check_invariants(manager, owners, contents):
    pool = manager.block_pool
    free_ids = {block.block_id for block in pool.free_queue}
    assert len(free_ids) == manager.num_free_blocks  # no block queued twice
    owned_ids = {i for block_ids in owners.values() for i in block_ids}
    assert NULL_BLOCK_ID not in owned_ids | free_ids and not owned_ids & free_ids
    assert len(free_ids) + len(owned_ids) == pool.num_blocks - 1
    for block in pool.blocks[1:]:
        assert block.ref_cnt == sum(ids.count(block.block_id) for ids in owners.values())
    for block_hash, block in pool.cached_blocks.items():
        assert block.block_hash == block_hash
        # The simulated KV content of a cached block is what its hash names.
        assert contents[block.block_id] == block_hash


@pytest.mark.parametrize("seed", range(6))
def test_randomized_operations_keep_invariants(seed):
    rng = random.Random(seed)
    manager = KVCacheManager(num_blocks=24, block_size=BLOCK_SIZE)
    stems = [[rng.randrange(5) for _ in range(rng.randrange(4, 20))] for _ in range(4)]
    owners: dict[str, list[int]] = {}
    prompts: dict[str, tuple[list[int], list[bytes], int]] = {}  # tokens, hashes, computed
    contents: dict[int, bytes] = {}  # block id -> hash of the KV "written" into it
    for step in range(300):
        op = rng.random()
        if op < 0.35:  # admit a new request sharing a random prefix
            request_id = f"r{step}"
            tokens = rng.choice(stems) + [rng.randrange(5) for _ in range(rng.randrange(1, 10))]
            block_hashes = _hashes(tokens)
            hit = manager.find_prefix_hit(block_hashes, len(tokens), record_stats=True)
            assert hit.num_cached_tokens <= len(tokens) - 1
            for index, block_id in enumerate(hit.block_ids):
                assert contents[block_id] == block_hashes[index]  # a hit names correct KV
            num_free_before = manager.num_free_blocks
            if manager.allocate_slots(request_id, len(tokens), hit) is None:
                assert manager.num_free_blocks == num_free_before
                continue
            owners[request_id] = manager.get_block_ids(request_id)
            prompts[request_id] = (tokens, block_hashes, hit.num_cached_tokens)
        elif op < 0.75 and prompts:  # compute a chunk or decode a token, then cache
            request_id = rng.choice(sorted(prompts))
            tokens, block_hashes, computed = prompts[request_id]
            if computed == len(tokens):
                tokens.append(rng.randrange(5))
                if manager.allocate_slots(request_id, len(tokens)) is None:
                    tokens.pop()
                    continue
                extend_block_hashes(block_hashes, tokens, BLOCK_SIZE)
            computed = min(len(tokens), computed + rng.randrange(1, 9))
            block_ids = manager.get_block_ids(request_id)
            for index in range(computed // BLOCK_SIZE):
                contents[block_ids[index]] = block_hashes[index]
            manager.cache_blocks(request_id, block_hashes, computed)
            prompts[request_id] = (tokens, block_hashes, computed)
        elif owners:  # finish or preempt
            request_id = rng.choice(sorted(owners))
            manager.free(request_id)
            del owners[request_id], prompts[request_id]
        _check_invariants(manager, owners, contents)
    queries, hits = manager.prefix_cache_stats
    assert hits > 0 and queries > hits
    assert manager.block_pool.num_evictions > 0

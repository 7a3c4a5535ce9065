"""Per-request KV block tables on top of the block pool, with prefix caching.

The scheduler's view of the KV cache. Requests are known by id only; a request's block
table is its list of block ids, position i holding tokens i*block_size..(i+1)*block_size-1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cache.block_hash import BlockHash
from cache.block_pool import BlockPool, KVBlock


@dataclass(frozen=True)
class PrefixHit:
    """Cached leading blocks of a prompt and the tokens they cover (a multiple of the block
    size). Valid until the next allocate_slots or free call: use it right away."""

    block_ids: tuple[int, ...]
    num_cached_tokens: int

    @property
    def num_blocks(self) -> int:
        return len(self.block_ids)


_EMPTY_HIT = PrefixHit(block_ids=(), num_cached_tokens=0)


class KVCacheManager:
    """Gives requests the blocks they need and shares full blocks of equal content.

    Invariant: each block a request owns carries one reference for that request; a block
    shared by k requests has ref_cnt k. Block tables only grow until free().
    """

    def __init__(
        self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True
    ) -> None:
        if block_size <= 0:
            raise ValueError(f"block_size must be > 0, got {block_size}")
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.block_pool = BlockPool(num_blocks, enable_prefix_caching)
        self._req_to_blocks: dict[str, list[KVBlock]] = {}
        self._req_to_block_ids: dict[str, list[int]] = {}
        # Leading blocks of each request already registered in the prefix cache.
        self._num_cached_blocks: dict[str, int] = {}
        self._num_query_tokens = 0
        self._num_hit_tokens = 0

    @property
    def num_free_blocks(self) -> int:
        return self.block_pool.get_num_free_blocks()

    @property
    def usage(self) -> float:
        return self.block_pool.usage

    @property
    def prefix_cache_stats(self) -> tuple[int, int]:
        """(queried tokens, hit tokens) summed over find_prefix_hit(record_stats=True)."""
        return self._num_query_tokens, self._num_hit_tokens

    def find_prefix_hit(
        self, block_hashes: Sequence[BlockHash], num_tokens: int, *, record_stats: bool = False
    ) -> PrefixHit:
        """Longest run of cached leading blocks of a prompt of `num_tokens` tokens.

        At most num_tokens - 1 tokens count as cached, rounded down to whole blocks: the last
        token is always computed so that it yields logits. Changes no reference count; with
        record_stats it adds to prefix_cache_stats (only when caching is enabled).
        """
        if not self.enable_prefix_caching:
            return _EMPTY_HIT
        max_num_blocks = max(num_tokens - 1, 0) // self.block_size
        block_ids = []
        for block_hash in block_hashes[:max_num_blocks]:
            block = self.block_pool.get_cached_block(block_hash)
            if block is None:
                break
            block_ids.append(block.block_id)
        hit = _EMPTY_HIT
        if block_ids:
            hit = PrefixHit(tuple(block_ids), len(block_ids) * self.block_size)
        if record_stats:
            self._num_query_tokens += num_tokens
            self._num_hit_tokens += hit.num_cached_tokens
        return hit

    def allocate_slots(
        self, request_id: str, num_tokens: int, prefix_hit: PrefixHit | None = None
    ) -> list[int] | None:
        """Make the request own blocks for `num_tokens` tokens in all (ceil division).

        On the request's first allocation the prefix hit's blocks are taken (one reference
        each) and placed first. Returns the ids of blocks newly allocated by this call
        (possibly empty), or None, changing nothing, if too few blocks are free.
        """
        if num_tokens < 0:
            raise ValueError(f"num_tokens must be >= 0, got {num_tokens}")
        blocks = self._req_to_blocks.get(request_id)
        hit_blocks = self._hit_blocks(request_id, blocks, prefix_hit)
        num_owned = (len(blocks) if blocks is not None else 0) + len(hit_blocks)
        num_new_blocks = max(-(-num_tokens // self.block_size) - num_owned, 0)
        # Taking a hit block with ref_cnt 0 pulls it out of the free queue, so it competes
        # with the new blocks for the free ones. Check everything before changing anything.
        num_free_hit_blocks = sum(1 for block in hit_blocks if block.ref_cnt == 0)
        if num_new_blocks + num_free_hit_blocks > self.block_pool.get_num_free_blocks():
            return None
        if blocks is None:
            blocks = self._req_to_blocks[request_id] = []
            self._req_to_block_ids[request_id] = []
            self._num_cached_blocks[request_id] = len(hit_blocks)
        block_ids = self._req_to_block_ids[request_id]
        self.block_pool.touch(hit_blocks)
        blocks.extend(hit_blocks)
        block_ids.extend(block.block_id for block in hit_blocks)
        new_blocks = self.block_pool.allocate(num_new_blocks)
        new_block_ids = [block.block_id for block in new_blocks]
        blocks.extend(new_blocks)
        block_ids.extend(new_block_ids)
        return new_block_ids

    def cache_blocks(
        self, request_id: str, block_hashes: Sequence[BlockHash], num_computed_tokens: int
    ) -> None:
        """Register the request's full, computed blocks (below num_computed_tokens //
        block_size, and only those with a hash in block_hashes) in the prefix cache.
        Idempotent; blocks registered before are skipped. No-op without prefix caching."""
        if not self.enable_prefix_caching:
            return
        blocks = self._req_to_blocks.get(request_id)
        if blocks is None:
            raise KeyError(f"cache_blocks: unknown request {request_id!r}")
        num_full_blocks = num_computed_tokens // self.block_size
        if num_full_blocks > len(blocks):
            raise ValueError(
                f"request {request_id!r} computed {num_computed_tokens} tokens "
                f"but owns only {len(blocks)} blocks"
            )
        num_full_blocks = min(num_full_blocks, len(block_hashes))
        num_cached = self._num_cached_blocks[request_id]
        for index in range(num_cached, num_full_blocks):
            self.block_pool.cache_full_block(blocks[index], block_hashes[index])
        self._num_cached_blocks[request_id] = max(num_cached, num_full_blocks)

    def free(self, request_id: str) -> None:
        """Release all of the request's blocks, tail first, and forget it. Unknown ids are a
        no-op (a request may be aborted before it ever got blocks)."""
        blocks = self._req_to_blocks.pop(request_id, None)
        if blocks is None:
            return
        del self._req_to_block_ids[request_id]
        del self._num_cached_blocks[request_id]
        self.block_pool.free(reversed(blocks))

    def get_block_ids(self, request_id: str) -> list[int]:
        """The request's block table: the live list, read-only by convention."""
        return self._req_to_block_ids[request_id]

    def reset_prefix_cache(self) -> bool:
        """Forget all cached content; False (and nothing done) while any block is in use."""
        return self.block_pool.reset_prefix_cache()

    def _hit_blocks(
        self, request_id: str, blocks: list[KVBlock] | None, prefix_hit: PrefixHit | None
    ) -> list[KVBlock]:
        if prefix_hit is None or not prefix_hit.block_ids:
            return []
        if blocks is not None:
            raise ValueError(f"prefix hit given for request {request_id!r} that already has blocks")
        if prefix_hit.num_cached_tokens != prefix_hit.num_blocks * self.block_size:
            raise ValueError(f"inconsistent {prefix_hit} for block_size {self.block_size}")
        hit_blocks = [self.block_pool.blocks[block_id] for block_id in prefix_hit.block_ids]
        # A hit whose block has since been evicted would hand out wrong KV content.
        if any(block.block_hash is None for block in hit_blocks):
            raise ValueError(f"stale {prefix_hit}: a block was evicted since find_prefix_hit")
        return hit_blocks

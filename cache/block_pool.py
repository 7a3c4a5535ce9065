"""The pool of KV blocks: reference counts, the LRU free queue and the prefix-cache map.

Pure bookkeeping over block ids; the KV tensors live with the model runner.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from cache.block_hash import BlockHash

# Block 0 is the null block: padding entries of block tables point at it; it is never handed
# out, never freed and never cached.
NULL_BLOCK_ID = 0


class KVBlock:
    """One KV block. ref_cnt counts the requests using it; block_hash is set once the block
    is full and computed (and kept while it sits free, until it is reallocated)."""

    __slots__ = ("block_id", "ref_cnt", "block_hash", "prev_free", "next_free")

    def __init__(self, block_id: int) -> None:
        self.block_id = block_id
        self.ref_cnt = 0
        self.block_hash: BlockHash | None = None
        # Intrusive links of the free queue; both None while the block is not in it.
        self.prev_free: KVBlock | None = None
        self.next_free: KVBlock | None = None

    def __repr__(self) -> str:
        digest = self.block_hash.hex()[:8] if self.block_hash else None
        return f"KVBlock(id={self.block_id}, ref_cnt={self.ref_cnt}, hash={digest})"


class FreeBlockQueue:
    """Doubly linked list of free blocks, least recently freed at the head; O(1) append,
    pop from the head and removal from the middle."""

    def __init__(self, blocks: Iterable[KVBlock]) -> None:
        self._head = KVBlock(-1)  # sentinels: never part of the pool
        self._tail = KVBlock(-1)
        self._head.next_free = self._tail
        self._tail.prev_free = self._head
        self._num_blocks = 0
        for block in blocks:
            self.append(block)

    def __len__(self) -> int:
        return self._num_blocks

    def __iter__(self) -> Iterator[KVBlock]:
        block = self._head.next_free
        while block is not self._tail:
            yield block
            block = block.next_free

    def append(self, block: KVBlock) -> None:
        if block.prev_free is not None:
            raise RuntimeError(f"{block} is already in the free queue")
        last = self._tail.prev_free
        last.next_free = block
        block.prev_free = last
        block.next_free = self._tail
        self._tail.prev_free = block
        self._num_blocks += 1

    def popleft(self) -> KVBlock:
        block = self._head.next_free
        if block is self._tail:
            raise IndexError("pop from an empty free queue")
        self.remove(block)
        return block

    def remove(self, block: KVBlock) -> None:
        if block.prev_free is None:
            raise RuntimeError(f"{block} is not in the free queue")
        block.prev_free.next_free = block.next_free
        block.next_free.prev_free = block.prev_free
        block.prev_free = block.next_free = None
        self._num_blocks -= 1


class BlockPool:
    """Owns blocks 0..num_blocks-1; block 0 is the null block, the rest are usable.

    Invariants: a block is in the free queue iff its ref_cnt is 0 (the null block excepted);
    every entry of the cached map is a block whose block_hash is that key. A free block keeps
    its hash and stays findable until allocate() pops it from the queue head (an eviction).
    """

    def __init__(self, num_blocks: int, enable_caching: bool) -> None:
        if num_blocks < 2:
            raise ValueError(f"num_blocks must be >= 2 (block 0 is reserved), got {num_blocks}")
        self.num_blocks = num_blocks
        self.enable_caching = enable_caching
        self.blocks = [KVBlock(block_id) for block_id in range(num_blocks)]
        self.null_block = self.blocks[NULL_BLOCK_ID]
        self.free_queue = FreeBlockQueue(self.blocks[1:])
        self.cached_blocks: dict[BlockHash, KVBlock] = {}
        self.num_evictions = 0

    @property
    def num_usable_blocks(self) -> int:
        return self.num_blocks - 1

    @property
    def usage(self) -> float:
        """Fraction of usable blocks held by requests (cached free blocks count as free)."""
        return 1.0 - len(self.free_queue) / self.num_usable_blocks

    def get_num_free_blocks(self) -> int:
        return len(self.free_queue)

    def get_cached_block(self, block_hash: BlockHash) -> KVBlock | None:
        """The block holding this content, free or in use; None if not cached. Pure query."""
        if not self.enable_caching:
            return None
        return self.cached_blocks.get(block_hash)

    def touch(self, blocks: Iterable[KVBlock]) -> None:
        """Take one more reference on each block; a free one leaves the free queue."""
        for block in blocks:
            self._check_not_null(block)
            if block.ref_cnt == 0:
                self.free_queue.remove(block)
            block.ref_cnt += 1

    def allocate(self, num_blocks: int) -> list[KVBlock]:
        """Hand out `num_blocks` blocks with ref_cnt 1 from the queue head, dropping the
        cached content of each (eviction). Raises ValueError if too few are free."""
        if num_blocks < 0:
            raise ValueError(f"num_blocks must be >= 0, got {num_blocks}")
        if num_blocks > len(self.free_queue):
            raise ValueError(
                f"cannot allocate {num_blocks} blocks: only {len(self.free_queue)} are free"
            )
        blocks = []
        for _ in range(num_blocks):
            block = self.free_queue.popleft()
            self._evict(block)
            block.ref_cnt = 1
            blocks.append(block)
        return blocks

    def free(self, blocks: Iterable[KVBlock]) -> None:
        """Drop one reference on each block; those reaching 0 join the queue tail in the order
        given (callers pass a request's blocks tail first, so its tail is evicted first)."""
        for block in blocks:
            self._check_not_null(block)
            if block.ref_cnt <= 0:
                raise RuntimeError(f"{block} freed more often than it was taken")
            block.ref_cnt -= 1
            if block.ref_cnt == 0:
                self.free_queue.append(block)

    def cache_full_block(self, block: KVBlock, block_hash: BlockHash) -> None:
        """Record that `block` holds the full, computed content named by `block_hash`.

        Idempotent. If another block already holds this hash the existing mapping is kept
        (this block still carries the hash but is not findable). No-op without caching.
        """
        if not self.enable_caching:
            return
        self._check_not_null(block)
        if block.block_hash is not None:
            if block.block_hash != block_hash:
                raise RuntimeError(f"{block} is already cached under another hash")
            return
        block.block_hash = block_hash
        self.cached_blocks.setdefault(block_hash, block)

    def reset_prefix_cache(self) -> bool:
        """Forget every cached hash. Refused (returns False) while any block is in use, since
        running requests rely on their blocks' hashes."""
        if len(self.free_queue) != self.num_usable_blocks:
            return False
        self.cached_blocks.clear()
        for block in self.blocks:
            block.block_hash = None
        return True

    def _evict(self, block: KVBlock) -> None:
        block_hash = block.block_hash
        if block_hash is None:
            return
        block.block_hash = None
        if self.cached_blocks.get(block_hash) is block:
            del self.cached_blocks[block_hash]
        self.num_evictions += 1

    @staticmethod
    def _check_not_null(block: KVBlock) -> None:
        if block.block_id == NULL_BLOCK_ID:
            raise RuntimeError("the null block is never allocated, freed or cached")

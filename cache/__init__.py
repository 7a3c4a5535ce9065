"""KV block bookkeeping with prefix caching (pure Python, no torch)."""

from cache.block_hash import BlockHash, MediaSpan, extend_block_hashes, hash_block_tokens
from cache.block_pool import NULL_BLOCK_ID, BlockPool, KVBlock
from cache.config import CacheConfig
from cache.kv_cache_manager import KVCacheManager, PrefixHit
from cache.kv_sizing import kv_cache_bytes_per_block, kv_dtype_bytes, num_blocks_for_budget

__all__ = [
    "NULL_BLOCK_ID",
    "BlockHash",
    "BlockPool",
    "CacheConfig",
    "KVBlock",
    "KVCacheManager",
    "MediaSpan",
    "PrefixHit",
    "extend_block_hashes",
    "hash_block_tokens",
    "kv_cache_bytes_per_block",
    "kv_dtype_bytes",
    "num_blocks_for_budget",
]

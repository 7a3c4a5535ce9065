"""GrammarCompiler: compilation off the engine's step loop.

Compiling a schema is CPU work in Python; run in a pool thread, it lets the step loop go on (the
GIL is shared, so steps slow down a little but never wait for a whole compile). Submitting a key
that is already compiling returns the same future, so a burst of requests with one schema compiles
it once.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from .grammar import Grammar
from .grammar_spec import GrammarSpec
from .token_cache import compile_for_tokenizer
from .token_grammar import CompiledGrammar, compiled_key
from .tokenizer_info import TokenizerInfo

T = TypeVar("T")


class GrammarCompiler:
    """A small thread pool with per-key deduplication of in-flight work."""

    def __init__(self, max_workers: int = 2):
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grammar-compile")
        self._pending: dict[str, Future] = {}
        self._lock = threading.Lock()

    def submit(self, key: str, fn: Callable[[], T]) -> Future[T]:
        """Run `fn()` in the pool, unless work for `key` is in flight: then return its future.

        The future's exception is whatever `fn` raised (a StructuredOutputError for a bad schema).
        """
        with self._lock:
            future = self._pending.get(key)
            if future is not None:
                return future
            future = self._pool.submit(fn)
            self._pending[key] = future
        future.add_done_callback(lambda f: self._forget(key, f))
        return future

    def _forget(self, key: str, future: Future) -> None:
        with self._lock:
            if self._pending.get(key) is future:
                del self._pending[key]

    def submit_for_tokenizer(self, grammar: Grammar | GrammarSpec, tokenizer_info: TokenizerInfo, *,
                             cache_dir: str | os.PathLike | None = None) -> Future[CompiledGrammar]:
        """compile_for_tokenizer in the pool."""
        key = compiled_key(grammar.key, tokenizer_info)
        return self.submit(key, lambda: compile_for_tokenizer(grammar, tokenizer_info, cache_dir=cache_dir))

    @property
    def num_pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=not wait)

    def __enter__(self) -> GrammarCompiler:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()

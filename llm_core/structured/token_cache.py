"""compile_for_tokenizer: CompiledGrammars cached in memory (LRU) and on disk.

The key of an entry is sha256(grammar key, tokenizer vocab hash), where the grammar key hashes the
canonical schema or pattern, the compile settings and GRAMMAR_VERSION. A disk entry
`<cache_dir>/<key>.npz` holds the DFA and the token masks computed when it was written; a hit
skips compilation and those mask walks. Masks computed later stay in memory until
`save_compiled` is called again (the engine may do so when a request finishes). Unreadable or
mismatching files are treated as misses and overwritten.

A build computes the start state's mask, and with `precompute_seconds` more masks ahead,
breadth-first from the start (None: all of them). The default computes the rest on first use, on
the step loop: a mask inside a free string costs ~1-3 ms with a 150k-token vocabulary, but
only the states a request reaches are computed. Computing all ahead costs ~5-10x the CPU time of
one instance's masks and runs in the compile thread, which shares the GIL with the step loop
(docs/structured-output.md, "Benchmark"); it suits warming a disk cache for known schemas.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

from .dfa import Dfa
from .grammar import GRAMMAR_VERSION, Grammar
from .grammar_spec import GrammarSpec
from .token_grammar import CompiledGrammar, compiled_key
from .tokenizer_info import TokenizerInfo

logger = logging.getLogger(__name__)
DEFAULT_MAX_MEMORY_ENTRIES = 64
DEFAULT_PRECOMPUTE_SECONDS = 0.0


class CompiledGrammarCache:
    """A thread-safe LRU of CompiledGrammars by key, backed by an optional directory."""

    def __init__(self, max_entries: int = DEFAULT_MAX_MEMORY_ENTRIES):
        self.max_entries = max_entries
        self._entries: OrderedDict[str, CompiledGrammar] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, key: str) -> CompiledGrammar | None:
        with self._lock:
            compiled = self._entries.get(key)
            if compiled is not None:
                self._entries.move_to_end(key)
            return compiled

    def insert(self, compiled: CompiledGrammar) -> None:
        with self._lock:
            self._entries[compiled.key] = compiled
            self._entries.move_to_end(compiled.key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def get(self, grammar: Grammar | GrammarSpec, tokenizer_info: TokenizerInfo,
            cache_dir: str | os.PathLike | None = None,
            precompute_seconds: float | None = DEFAULT_PRECOMPUTE_SECONDS) -> CompiledGrammar:
        key = compiled_key(grammar.key, tokenizer_info)
        compiled = self.lookup(key)
        if compiled is not None:
            return compiled
        path = Path(cache_dir) / f"{key}.npz" if cache_dir is not None else None
        if path is not None and path.exists():
            compiled = load_compiled(path, tokenizer_info, key)
        if compiled is None:
            if isinstance(grammar, GrammarSpec):
                grammar = grammar.compile()
            compiled = CompiledGrammar(grammar, tokenizer_info)
            compiled.precompute(max_seconds=precompute_seconds)
            if path is not None:
                save_compiled(compiled, path.parent)
        self.insert(compiled)
        return compiled


MEMORY_CACHE = CompiledGrammarCache()


def compile_for_tokenizer(grammar: Grammar | GrammarSpec, tokenizer_info: TokenizerInfo, *,
                          cache_dir: str | os.PathLike | None = None,
                          precompute_seconds: float | None = DEFAULT_PRECOMPUTE_SECONDS) -> CompiledGrammar:
    """The CompiledGrammar of (grammar, tokenizer), from memory, from `cache_dir`, or built.

    A GrammarSpec is compiled only on a miss of both caches; a build computes the start state's
    token mask and more for up to `precompute_seconds` (None: all). Safe to call from several threads.
    """
    return MEMORY_CACHE.get(grammar, tokenizer_info, cache_dir, precompute_seconds)


def save_compiled(compiled: CompiledGrammar, cache_dir: str | os.PathLike) -> Path:
    """Write the DFA and every mask computed so far to `<cache_dir>/<key>.npz`, atomically."""
    directory = Path(cache_dir)
    directory.mkdir(parents=True, exist_ok=True)
    states = compiled.computed_states
    width = compiled.bitmask_width
    masks = np.stack([compiled.token_mask(s) for s in states]) if states else np.zeros((0, width), np.int32)
    meta = {"version": GRAMMAR_VERSION, "key": compiled.key, "grammar_key": compiled.grammar.key,
            "description": compiled.grammar.description}
    dfa = compiled.dfa
    path = directory / f"{compiled.key}.npz"
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, byte_class=dfa.byte_class, table=dfa.table, accepting=dfa.accepting,
                                mask_states=np.array(states, dtype=np.int32), masks=masks,
                                meta=np.array(json.dumps(meta)))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_compiled(path: Path, tokenizer_info: TokenizerInfo, key: str) -> CompiledGrammar | None:
    """The CompiledGrammar stored at `path`, or None when the file is unreadable or not `key`'s."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            if meta.get("version") != GRAMMAR_VERSION or meta.get("key") != key:
                return None
            dfa = Dfa(data["byte_class"], data["table"], data["accepting"])
            masks = data["masks"]
            if masks.shape[1:] != (tokenizer_info.bitmask_width,):
                return None
            mask_of = {int(s): masks[i].copy() for i, s in enumerate(data["mask_states"])}
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        logger.warning("ignoring unreadable grammar cache file %s: %s", path, exc)
        return None
    for mask in mask_of.values():
        mask.flags.writeable = False
    grammar = Grammar(dfa, meta["grammar_key"], meta["description"])
    return CompiledGrammar(grammar, tokenizer_info, mask_of)

"""One benchmark job: an engine compiles one schema cold, then walks the instances' token paths.

A job runs in a forked child (`run_forked`), so that every schema starts from a process with no
cache of it, a slow compile can be cut off at a timeout, and a crash in native code costs one
result. The vocabularies are set up once in the parent and inherited.

Along each path (an instance's tokens, then EOS) the job times every fill of the next-token
bitmask, checks that the path's token is allowed by the mask and accepted by the matcher, and walks
the path twice: cold (right after compiling; our masks are computed lazily here) and warm (a new
matcher on the same compiled grammar: our memoized masks). Given our masks of the same path
(`reference`), it also compares the competitor's mask with ours at every step.
"""

from __future__ import annotations

import multiprocessing
import time
import traceback
from collections.abc import Callable

import numpy as np
import torch

from bench.structured_corpus import BenchCase
from bench.structured_engines import WARMUP_CASE

WHITESPACE = frozenset(b" \t\r\n")
NUM_SAMPLES = 4


def run_forked(fn: Callable[[], dict], timeout_s: float) -> dict:
    """fn() in a forked child; {"status": "timeout"} past timeout_s, {"status": "crashed"} if it dies."""
    ctx = multiprocessing.get_context("fork")
    receiver, sender = ctx.Pipe(duplex=False)

    def child() -> None:
        try:
            result = fn()
        except Exception as exc:  # an engine's refusal or failure is a result, not a crash
            result = {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:300],
                      "traceback": traceback.format_exc(limit=3)}
        sender.send(result)

    proc = ctx.Process(target=child, daemon=True)
    start = time.perf_counter()
    proc.start()
    sender.close()
    result = {"status": "timeout", "timeout_s": timeout_s}
    if receiver.poll(timeout_s):
        try:
            result = receiver.recv()
        except EOFError:
            result = {"status": "crashed"}
    if proc.is_alive():
        proc.kill()
    proc.join()
    if result.get("status") == "crashed":
        result["exitcode"] = proc.exitcode
    result["job_s"] = time.perf_counter() - start
    receiver.close()
    return result


def run_case(engine, case: BenchCase, paths: list[list[int]], eos_id: int, width: int,
             token_bytes: tuple, reference: list[list[np.ndarray]] | None = None,
             keep_rows: bool = False) -> dict:
    """Compile `case` cold and walk its paths; see the module docstring. Exceptions propagate."""
    bitmask = torch.zeros((1, width), dtype=torch.int32)
    engine.fill(engine.matcher(engine.compile(WARMUP_CASE)), bitmask)  # one-time set-up, not billed
    start = time.perf_counter()
    try:
        compiled = engine.compile(case)
    except Exception as exc:
        return {"status": "refused", "error": f"{type(exc).__name__}: {exc}"[:300],
                "compile_s": time.perf_counter() - start}
    result = {"status": "ok", "compile_s": time.perf_counter() - start, "paths": [],
              "fill_us": {"cold": [], "warm": []}, "accept_us": []}
    rows_out = []
    for phase in ("cold", "warm"):
        for index, ids in enumerate(paths):
            num_fills = len(result["fill_us"][phase])
            walk = _walk(engine, compiled, [*ids, eos_id], bitmask, result, phase, keep=phase == "cold")
            if phase == "cold":
                info = {"tokens": len(ids), "accepted": walk["rejected_step"] is None,
                        "fill_ms": sum(result["fill_us"][phase][num_fills:]) / 1e3}
                if walk["rejected_step"] is not None:
                    info.update(_rejection(ids, walk, token_bytes, eos_id))
                if reference is not None and index < len(reference):
                    info["agreement"] = _agreement(reference[index], walk["rows"], ids, token_bytes)
                result["paths"].append(info)
                if keep_rows:
                    rows_out.append(walk["rows"])
    if keep_rows:
        result["rows"] = rows_out
    return result


def _walk(engine, compiled, tokens: list[int], bitmask: torch.Tensor, result: dict, phase: str,
          keep: bool) -> dict:
    matcher = engine.matcher(compiled)
    rows, rejected, refused_by = [], None, None
    for step, token in enumerate(tokens):
        bitmask.zero_()
        t0 = time.perf_counter_ns()
        engine.fill(matcher, bitmask)
        t1 = time.perf_counter_ns()
        result["fill_us"][phase].append((t1 - t0) / 1e3)
        row = bitmask[0].numpy()
        if keep:
            rows.append(row.copy())
        if not (int(row[token >> 5]) >> (token & 31)) & 1:
            rejected, refused_by = step, "mask"
            break
        t2 = time.perf_counter_ns()
        ok = engine.accept(matcher, token)
        if phase == "cold":
            result["accept_us"].append((time.perf_counter_ns() - t2) / 1e3)
        if not ok:
            rejected, refused_by = step, "matcher"
            break
    return {"rows": rows, "rejected_step": rejected, "refused_by": refused_by}


def _text(ids: list[int], token_bytes: tuple) -> bytes:
    return b"".join(token_bytes[t] or b"" for t in ids)


def _rejection(ids: list[int], walk: dict, token_bytes: tuple, eos_id: int) -> dict:
    step = walk["rejected_step"]
    token = ids[step] if step < len(ids) else eos_id
    return {"rejected_step": step, "refused_by": walk["refused_by"],
            "rejected_token": "EOS" if token == eos_id else repr(token_bytes[token]),
            "context": repr(_text(ids[:step], token_bytes)[-40:])}


def _allowed(row: np.ndarray) -> np.ndarray:
    return np.unpackbits(row.view(np.uint8), bitorder="little").astype(bool)


def _agreement(ours: list[np.ndarray], theirs: list[np.ndarray], ids: list[int], token_bytes: tuple) -> dict:
    """Step-by-step comparison of two engines' masks along one path (as far as both got)."""
    steps = min(len(ours), len(theirs))
    out = {"steps": steps, "equal": 0, "whitespace_only": 0, "only_ours": 0, "only_theirs": 0}
    for step in range(steps):
        a, b = _allowed(ours[step]), _allowed(theirs[step])
        only_ours, only_theirs = np.flatnonzero(a & ~b), np.flatnonzero(b & ~a)
        if not only_ours.size and not only_theirs.size:
            out["equal"] += 1
            continue
        out["only_ours"] += int(only_ours.size)
        out["only_theirs"] += int(only_theirs.size)
        differing = [token_bytes[t] if t < len(token_bytes) else None for t in (*only_ours, *only_theirs)]
        if all(d is not None and WHITESPACE.intersection(d) for d in differing):
            out["whitespace_only"] += 1
        elif "first_content_difference" not in out:
            def sample(tokens):
                return [repr(token_bytes[t]) if t < len(token_bytes) and token_bytes[t] is not None else f"id {t}"
                        for t in tokens[:NUM_SAMPLES]]
            out["first_content_difference"] = {
                "step": step, "context": repr(_text(ids[:step], token_bytes)[-40:]),
                "only_ours": sample([t for t in only_ours if not _is_ws(token_bytes, t)] or list(only_ours)),
                "only_theirs": sample([t for t in only_theirs if not _is_ws(token_bytes, t)] or list(only_theirs)),
                "num_only_ours": int(only_ours.size), "num_only_theirs": int(only_theirs.size)}
    return out


def _is_ws(token_bytes: tuple, token: int) -> bool:
    data = token_bytes[token] if token < len(token_bytes) else None
    return data is not None and bool(WHITESPACE.intersection(data))

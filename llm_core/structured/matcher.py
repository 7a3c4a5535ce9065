"""GrammarMatcher: the per-request state of decoding under a CompiledGrammar.

The state is a function of the accepted tokens only: the DFA state after each of them (kept for
rollback) and whether EOS was accepted. `snapshot()` is a cheap immutable copy, so a preempted
request resumes exactly (or the state can be rebuilt by replaying its output tokens). Speculative
decoding fills one mask per draft position (`fill_draft_bitmasks`) and rolls back rejected tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from typing import TYPE_CHECKING

import numpy as np

from .dfa import DEAD
from .token_grammar import CompiledGrammar

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class MatcherState:
    """`states[i]`: the DFA state after i accepted tokens; `terminated_at`: tokens when EOS came."""

    states: tuple[int, ...]
    terminated_at: int | None


class GrammarMatcher:
    """Accepts tokens one by one and says which tokens may come next. Not thread-safe; one per request."""

    def __init__(self, compiled: CompiledGrammar, state: MatcherState | None = None):
        self.compiled = compiled
        self._states: list[int] = [0]
        self._terminated_at: int | None = None
        if state is not None:
            self.restore(state)

    @property
    def num_accepted_tokens(self) -> int:
        return len(self._states) - 1

    @property
    def dfa_state(self) -> int:
        return self._states[-1]

    def is_terminated(self) -> bool:
        """Whether EOS has been accepted (nothing else can be)."""
        return self._terminated_at is not None

    def is_completed(self) -> bool:
        """Whether the text so far is a complete match (EOS is allowed now)."""
        return self.is_terminated() or self.compiled.dfa.is_accepting(self.dfa_state)

    def accept_token(self, token_id: int) -> bool:
        """Advance by one token; False (state unchanged) when the grammar does not allow it."""
        if self.is_terminated():
            return False
        state = self.dfa_state
        if self.compiled.is_eos(token_id):
            if not self.compiled.dfa.is_accepting(state):
                return False
            self._states.append(state)
            self._terminated_at = self.num_accepted_tokens
            return True
        next_state = self.compiled.next_state(state, token_id)
        if next_state == DEAD:
            return False
        self._states.append(next_state)
        return True

    def accept_tokens(self, token_ids: Sequence[int]) -> int:
        """Accept tokens in order until one is refused; the number accepted."""
        for i, token_id in enumerate(token_ids):
            if not self.accept_token(token_id):
                return i
        return len(token_ids)

    def rollback(self, num_tokens: int) -> None:
        """Undo the last `num_tokens` accepted tokens (an accepted EOS included)."""
        if not 0 <= num_tokens <= self.num_accepted_tokens:
            raise ValueError(f"cannot roll back {num_tokens} of {self.num_accepted_tokens} tokens")
        if num_tokens:
            del self._states[-num_tokens:]
        if self._terminated_at is not None and self._terminated_at > self.num_accepted_tokens:
            self._terminated_at = None

    def reset(self) -> None:
        self._states = [0]
        self._terminated_at = None

    def snapshot(self) -> MatcherState:
        return MatcherState(tuple(self._states), self._terminated_at)

    def restore(self, state: MatcherState) -> None:
        if not state.states or state.states[0] != 0:
            raise ValueError("not a matcher state: it must start at DFA state 0")
        self._states = list(state.states)
        self._terminated_at = state.terminated_at

    def next_token_mask(self) -> np.ndarray:
        """[bitmask_width] int32 of the tokens allowed next; EOS alone once terminated."""
        if self.is_terminated():
            return self.compiled.eos_mask
        return self.compiled.token_mask(self.dfa_state)

    def fill_next_token_bitmask(self, bitmask: torch.Tensor | np.ndarray, index: int = 0) -> None:
        """Write the next-token mask into row `index` of `bitmask` ([B, W] or [W], int32)."""
        write_bitmask_row(bitmask, index, self.next_token_mask())

    def fill_draft_bitmasks(self, draft_token_ids: Sequence[int], bitmask: torch.Tensor | np.ndarray,
                            index: int = 0) -> int:
        """Masks for a draft: row index+i gets the mask after draft tokens [:i], for i = 0..k, where
        k is how many draft tokens the grammar accepts (returned). The state is left unchanged."""
        k = 0
        write_bitmask_row(bitmask, index, self.next_token_mask())
        for token_id in draft_token_ids:
            if not self.accept_token(token_id):
                break
            k += 1
            write_bitmask_row(bitmask, index + k, self.next_token_mask())
        self.rollback(k)
        return k


def write_bitmask_row(bitmask: torch.Tensor | np.ndarray, index: int, mask: np.ndarray) -> None:
    """Copy `mask` into row `index` of a numpy array or torch tensor (torch is imported only then)."""
    # A CPU tensor is written through its numpy view: one copy, no torch dispatch (this runs
    # once per constrained row per step).
    on_cpu = isinstance(bitmask, np.ndarray) or bitmask.device.type == "cpu"
    target = bitmask if isinstance(bitmask, np.ndarray) else bitmask.numpy() if on_cpu else bitmask
    row = target[index] if target.ndim == 2 else target
    if on_cpu:
        ok = row.dtype == np.int32
    else:
        import torch
        ok = row.dtype == torch.int32
    if not ok or row.shape[-1] != mask.shape[0]:
        raise ValueError(f"bitmask row must be int32 of width {mask.shape[0]}, got "
                         f"{row.dtype} {tuple(row.shape)}")
    if on_cpu:
        row[...] = mask
    else:
        row.copy_(torch.from_numpy(mask.copy()))  # masks are read-only; torch wants writable

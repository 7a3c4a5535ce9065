"""Shared helpers: the json.dumps forms of an instance, a jsonschema validator, random walks."""

import json

import jsonschema
import numpy as np

from llm_core.structured.dfa import DEAD


def dumps_forms(value) -> list[str]:
    """Compact, default and indented json.dumps forms, with ensure_ascii on and off."""
    forms = [json.dumps(value, separators=(",", ":")), json.dumps(value), json.dumps(value, indent=2),
             json.dumps(value, indent=4), json.dumps(value, ensure_ascii=False),
             json.dumps(value, indent=2, ensure_ascii=False, separators=(",", ": "))]
    return list(dict.fromkeys(forms))


def validator(schema):
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def random_text(dfa, rng: np.random.Generator, budget: int) -> bytes:
    """A random string of the DFA's language: random live bytes for `budget` bytes, then the
    shortest way to an accepting state."""
    dist = dfa.distance_to_accept()
    state, out = 0, bytearray()
    while True:
        options = [b for b in range(256) if dfa.step(state, bytes([b])) != DEAD]
        if dfa.is_accepting(state) and (not options or len(out) >= budget or rng.random() < 0.05):
            return bytes(out)
        if len(out) >= budget:
            options = [b for b in options if dist[dfa.step(state, bytes([b]))] < dist[state]]
        b = options[rng.integers(len(options))]
        out.append(b)
        state = dfa.step(state, bytes([b]))


def allowed_ids(mask_words: np.ndarray, vocab_size: int) -> np.ndarray:
    bits = np.unpackbits(mask_words.astype("<i4").view(np.uint8), bitorder="little")
    return np.flatnonzero(bits[:vocab_size])


def single_byte_tokens(tokenizer_info) -> dict[int, int]:
    """byte -> the id of a token that is exactly that byte."""
    out = {}
    for i, data in enumerate(tokenizer_info.token_bytes):
        if data is not None and len(data) == 1:
            out.setdefault(data[0], i)
    return out


def random_walk(matcher, rng: np.random.Generator, budget: int, eos_rate: float = 0.1) -> list[int]:
    """Accept random allowed tokens until EOS; after `budget` tokens, close by the shortest way.

    Asserts on the way that no mask is empty and that every allowed token is accepted."""
    compiled = matcher.compiled
    info, dfa = compiled.tokenizer_info, compiled.dfa
    dist = dfa.distance_to_accept()
    by_byte = single_byte_tokens(info)
    eos = info.eos_token_ids[0]
    ids: list[int] = []
    while not matcher.is_terminated():
        allowed = allowed_ids(matcher.next_token_mask(), info.vocab_size)
        assert allowed.size > 0, "empty mask before termination"
        eos_allowed = eos in allowed
        if eos_allowed and (len(ids) >= budget or rng.random() < eos_rate):
            token = eos
        elif len(ids) >= budget:
            state = matcher.dfa_state
            closer = [b for b in range(256) if (s := dfa.step(state, bytes([b]))) != DEAD and dist[s] < dist[state]]
            token = by_byte[closer[rng.integers(len(closer))]]
            assert token in allowed
        else:
            choices = allowed[allowed != eos] if allowed.size > 1 or not eos_allowed else allowed
            token = int(choices[rng.integers(choices.size)])
        assert matcher.accept_token(token), token
        ids.append(token)
    return ids

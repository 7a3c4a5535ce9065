"""Property-style fuzzing: whatever arrives, decoding returns an event or raises ProtocolError.

Seeds are fixed so a failure reproduces; an event that does decode must survive a re-encode.
"""

import json
import random

import msgpack
import pytest

from protocol import ERROR_CODES, ProtocolError, decode_frame, decode_server_frame, encode_event
from tests.protocol.samples import CLIENT_EVENTS, SERVER_EVENTS

MAX = 1 << 20
ROUNDS = 3000


def check_client(data):
    try:
        event = decode_frame(data, max_bytes=MAX)
    except ProtocolError as error:
        assert error.code in ERROR_CODES and isinstance(error.message, str) and error.message
        assert error.to_info().code == error.code
        return None
    for binary in (True, False):
        assert decode_frame(encode_event(event, binary), max_bytes=MAX) == event
    return event


def check_server(data):
    try:
        event = decode_server_frame(data)
    except ProtocolError as error:
        assert error.code in ERROR_CODES
        return
    assert decode_server_frame(encode_event(event, True)) == event


def random_value(rng: random.Random, depth: int = 0):
    pool = [None, True, False, 0, 1, -1, 2**31, 2**64 - 1, -(2**63), 0.5, -0.0, 1e308,
            float("nan"), float("inf"), "", "x", "image", "user", "ü" * 3, "a b", "0" * 64,
            b"", b"\x00\xff", msgpack.ExtType(3, b"e"), [], {}]
    if depth < 3 and rng.random() < 0.2:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(3))]
    if depth < 3 and rng.random() < 0.2:
        return {rng.choice(["type", "text", "item_id", "role", "x"]): random_value(rng, depth + 1)}
    return rng.choice(pool)


def mutate(rng: random.Random, value):
    """`value` with one randomly chosen node replaced, dropped or given an extra key."""
    if isinstance(value, dict) and value and rng.random() < 0.7:
        key = rng.choice(list(value))
        out = dict(value)
        roll = rng.random()
        if roll < 0.15:
            del out[key]
        elif roll < 0.25:
            out[rng.choice(["extra", "type", "data", "final"])] = random_value(rng)
        else:
            out[key] = mutate(rng, value[key])
        return out
    if isinstance(value, list) and value and rng.random() < 0.7:
        i = rng.randrange(len(value))
        return value[:i] + [mutate(rng, value[i])] + value[i + 1:]
    return random_value(rng)


def pack(rng, wire):
    if rng.random() < 0.5:
        return msgpack.packb(wire, use_bin_type=True)
    return json.dumps(wire, default=lambda v: v.hex() if isinstance(v, bytes) else str(v))


@pytest.mark.parametrize("seed", range(3))
def test_random_bytes(seed):
    rng = random.Random(seed)
    for _ in range(ROUNDS):
        data = rng.randbytes(rng.randrange(64))
        check_client(data)
        check_server(data)


@pytest.mark.parametrize("seed", range(3))
def test_random_text(seed):
    rng = random.Random(seed)
    alphabet = '{}[]:,"0123456789.eE-+ tfnrulaxyNI\\ü\ud800'
    for _ in range(ROUNDS):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(40)))
        check_client(text)
        check_server(text)


@pytest.mark.parametrize("seed", range(3))
def test_mutated_client_events(seed):
    rng = random.Random(seed)
    wires = [e.to_wire() for e in CLIENT_EVENTS]
    decoded = 0
    for _ in range(ROUNDS):
        wire = mutate(rng, rng.choice(wires))
        decoded += check_client(pack(rng, wire)) is not None
    assert decoded > 0  # some mutations stay valid: the fuzzer reaches past the first check


@pytest.mark.parametrize("seed", range(3))
def test_mutated_server_events(seed):
    rng = random.Random(seed)
    wires = [e.to_wire() for e in SERVER_EVENTS]
    for _ in range(ROUNDS):
        check_server(pack(rng, mutate(rng, rng.choice(wires))))


@pytest.mark.parametrize("seed", range(3))
def test_truncated_and_flipped_frames(seed):
    rng = random.Random(seed)
    frames = [encode_event(e, binary) for e in CLIENT_EVENTS for binary in (True, False)]
    for _ in range(ROUNDS):
        frame = rng.choice(frames)
        raw = bytearray(frame.encode() if isinstance(frame, str) else frame)
        if rng.random() < 0.5:
            del raw[rng.randrange(len(raw)):]
        else:
            raw[rng.randrange(len(raw))] ^= 1 << rng.randrange(8)
        check_client(bytes(raw))
        check_client(raw.decode("utf-8", "replace"))

"""ProgressiveDecoder (encoders/media/progressive.py): a blocking loop fed chunk by chunk."""

from __future__ import annotations

import gc
import threading

import pytest

from encoders.media.progressive import ProgressiveDecoder


def _lines(stream):
    """Yields each complete line that it reads (a stand-in for a demuxer)."""
    pending = b""
    while chunk := stream.read(3):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        yield from lines
    if pending:
        yield pending


def test_push_returns_everything_decodable_from_the_prefix():
    decoder = ProgressiveDecoder(_lines)
    assert decoder.push(b"ab") == []
    assert decoder.push(b"c\nde\nf") == [b"abc", b"de"]
    assert decoder.push(b"") == []
    assert decoder.push(b"g\n") == [b"fg"]
    assert decoder.push(b"tail") == []
    assert decoder.finish() == [b"tail"]
    assert decoder.is_done


def test_an_error_of_the_loop_is_raised_by_push_and_every_call_after():
    def failing(stream):
        yield stream.read(1)
        raise ValueError("bad byte")

    decoder = ProgressiveDecoder(failing)
    with pytest.raises(ValueError, match="bad byte"):
        decoder.push(b"xy")
    with pytest.raises(ValueError, match="bad byte"):
        decoder.push(b"more")
    with pytest.raises(ValueError, match="bad byte"):
        decoder.finish()


def test_a_loop_that_stops_early_ignores_later_bytes():
    def first_line_only(stream):
        yield next(_lines(stream))

    decoder = ProgressiveDecoder(first_line_only)
    assert decoder.push(b"one\ntwo\n") == [b"one"]
    assert decoder.is_done
    assert decoder.push(b"three\n") == []
    assert decoder.finish() == []


def _decode_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("test-decode")]


def test_close_and_a_forgotten_decoder_end_the_thread():
    decoder = ProgressiveDecoder(_lines, name="test-decode-closed")
    decoder.push(b"waiting for more")
    (thread,) = _decode_threads()
    decoder.close()
    thread.join(timeout=5)
    assert not thread.is_alive()
    with pytest.raises(RuntimeError):
        decoder.push(b"x")

    forgotten = ProgressiveDecoder(_lines, name="test-decode-forgotten")
    forgotten.push(b"never finished")
    (thread,) = _decode_threads()
    del forgotten
    gc.collect()
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_finish_without_push_runs_the_loop_on_empty_input():
    decoder = ProgressiveDecoder(_lines)
    assert decoder.finish() == []

"""Raw PCM audio: `audio/pcm;rate=N[;channels=C]`, interleaved signed 16-bit little-endian.

This is what a browser's AudioWorklet or a Python client sends from a live microphone, so it is
decoded chunk by chunk without PyAV: a chunk may end in the middle of a sample or of a frame of
channels, and the remainder waits for the next chunk.
"""

from __future__ import annotations

import numpy as np

from encoders.media.errors import corrupt, unsupported

MAX_RATE = 384_000
MAX_CHANNELS = 8
_BYTES_PER_SAMPLE = 2


def pcm_format(params: dict[str, str], item_id: str | None = None) -> tuple[int, int]:
    """(sample rate, channels) from the mime parameters; raises unsupported_media if invalid."""
    rate = _int_param(params, "rate", None, MAX_RATE, item_id)
    channels = _int_param(params, "channels", 1, MAX_CHANNELS, item_id)
    return rate, channels


def pcm16_to_mono(data: bytes, channels: int) -> np.ndarray:
    """float32 [samples] in [-1, 1): the mean of the channels; len(data) is a whole frame count."""
    samples = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
    if channels > 1:
        samples = samples.reshape(-1, channels).mean(axis=1, dtype=np.float32)
    return samples


class PcmChunks:
    """Turns chunks of PCM16 into mono float32 samples, holding back a partial frame."""

    def __init__(self, channels: int) -> None:
        self.channels = channels
        self._partial = b""

    def push(self, chunk: bytes) -> np.ndarray:
        data = self._partial + bytes(chunk)
        whole = len(data) - len(data) % (_BYTES_PER_SAMPLE * self.channels)
        self._partial = data[whole:]
        return pcm16_to_mono(data[:whole], self.channels)

    def finish(self, item_id: str | None = None) -> None:
        """Raises corrupt_media if the input ended inside a frame."""
        if self._partial:
            raise corrupt(f"the PCM audio ends with {len(self._partial)} bytes of a partial "
                          f"frame ({_BYTES_PER_SAMPLE * self.channels} bytes each)", item_id)


def _int_param(params: dict[str, str], name: str, default: int | None, maximum: int,
               item_id: str | None) -> int:
    text = params.get(name)
    if text is None:
        if default is None:
            raise unsupported(f"audio/pcm needs its sample rate in the mime type, as "
                              f"'audio/pcm;{name}=16000'", item_id)
        return default
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= maximum:
        raise unsupported(f"audio/pcm parameter {name}={text!r} is not an integer in "
                          f"1..{maximum}", item_id)
    return int(text)

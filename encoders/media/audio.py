"""Decoding audio (WAV, raw PCM16, WebM/Opus, Ogg Opus/Vorbis, MP3, AAC, FLAC) to mono float32.

Channels are averaged to mono; the native sample rate is kept and reported. Resampling to the
encoder's rate needs torchaudio and so happens in the engine process, not here. Only the first
audio stream is decoded; in a video container the video is ignored.

`StreamingAudioDecoder` accumulates live audio: PCM is converted chunk by chunk, streamable
containers (WebM, Ogg, WAV, MP3, FLAC, ADTS AAC) are decoded as they arrive in a decoder thread
(encoders.media.progressive), and MP4 is decoded when complete.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from typing import BinaryIO

import av
import numpy as np

from encoders.config import MediaLimits
from encoders.media.containers import (AUDIO_CODECS, STREAMING_OPTIONS, check_codec,
                                       check_complete, check_duration, declared_duration,
                                       ffmpeg_errors, open_input)
from encoders.media.errors import corrupt, too_large, unsupported
from encoders.media.mime import resolve_mime
from encoders.media.pcm import PcmChunks, pcm16_to_mono, pcm_format
from encoders.media.progressive import GrowingStream, ProgressiveDecoder

_WHAT = "the audio"
# Full scale of each integer sample format (u8 is offset by 128).
_FULL_SCALE = {"u8": 128.0, "s16": 32768.0, "s32": 2.0 ** 31, "s64": 2.0 ** 63, "flt": 1.0,
               "dbl": 1.0}


def decode_audio(data: bytes, mime: str | None, limits: MediaLimits,
                 item_id: str | None = None) -> tuple[np.ndarray, int]:
    """Decodes a whole audio item. Returns (float32 [samples] mono in [-1, 1], native rate in Hz).

    Raises MediaError: media_too_large (bytes or duration over the limits), unsupported_media
    (mime type, codec, bad audio/pcm parameters), corrupt_media (undecodable or truncated bytes).
    """
    _check_bytes(len(data), limits, item_id)
    mime, params = resolve_mime("audio", mime, data, item_id)
    if mime == "audio/pcm":
        rate, channels = pcm_format(params, item_id)
        if len(data) % (2 * channels):
            raise corrupt(f"the PCM audio is {len(data)} bytes, not a whole number of "
                          f"{2 * channels}-byte frames", item_id)
        check_duration(len(data) / (2 * channels * rate), limits.max_audio_duration_s, _WHAT,
                       item_id)
        return pcm16_to_mono(data, channels), rate
    if mime == "audio/wav":
        _check_wav_complete(data, item_id)
    chunks = list(_decode(io.BytesIO(data), mime, {}, limits, item_id))
    return np.concatenate([samples for samples, _ in chunks]), chunks[0][1]


class StreamingAudioDecoder:
    """Decodes one audio item while its chunks arrive (a live microphone, an upload).

    push(chunk) returns the mono float32 samples that became decodable, finish() the rest;
    `sample_rate` is known once the first samples are. Raises MediaError like decode_audio, and
    after one, raises it again on every call. One caller at a time, never the event loop.
    """

    def __init__(self, mime: str | None, limits: MediaLimits, item_id: str | None = None) -> None:
        self._declared_mime = mime
        self._limits = limits
        self._item_id = item_id
        self._mime: str | None = None
        self.sample_rate: int | None = None
        self.num_bytes = 0
        self.num_samples = 0
        self._pcm: PcmChunks | None = None
        self._progressive: ProgressiveDecoder[tuple[np.ndarray, int]] | None = None
        self._held = bytearray()  # an MP4, decoded when complete

    def push(self, chunk: bytes) -> np.ndarray:
        self.num_bytes += len(chunk)
        if self.num_bytes > self._limits.max_audio_bytes:
            self.close()
            _check_bytes(self.num_bytes, self._limits, self._item_id)
        if self._mime is None:
            self._start(chunk)
        if self._pcm is not None:
            return self._count(self._pcm.push(chunk))
        if self._progressive is not None:
            return self._collect(self._progressive.push(chunk))
        self._held += chunk
        return np.zeros(0, np.float32)

    def finish(self) -> np.ndarray:
        if self._mime is None:
            raise corrupt("the audio is empty", self._item_id)
        if self._pcm is not None:
            self._pcm.finish(self._item_id)
            return np.zeros(0, np.float32)
        if self._progressive is not None:
            return self._collect(self._progressive.finish())
        data, self._held = bytes(self._held), bytearray()
        return self._collect(list(_decode(io.BytesIO(data), self._mime, {}, self._limits,
                                          self._item_id)))

    def close(self) -> None:
        """Drops the item: stops the decoder thread at its next read; idempotent."""
        self._held = bytearray()
        if self._progressive is not None:
            self._progressive.close()

    def _start(self, first_chunk: bytes) -> None:
        mime, params = resolve_mime("audio", self._declared_mime, first_chunk, self._item_id)
        self._mime = mime
        if mime == "audio/pcm":
            self.sample_rate, channels = pcm_format(params, self._item_id)
            self._pcm = PcmChunks(channels)
        elif mime not in ("audio/mp4", "video/mp4"):
            limits, item_id = self._limits, self._item_id

            def decode(stream: GrowingStream) -> Iterator[tuple[np.ndarray, int]]:
                return _decode(stream, mime, STREAMING_OPTIONS, limits, item_id)

            self._progressive = ProgressiveDecoder(decode, name=f"audio-decode-{item_id}")

    def _collect(self, chunks: list[tuple[np.ndarray, int]]) -> np.ndarray:
        if not chunks:
            return np.zeros(0, np.float32)
        self.sample_rate = chunks[0][1]
        return self._count(np.concatenate([samples for samples, _ in chunks]))

    def _count(self, samples: np.ndarray) -> np.ndarray:
        self.num_samples += len(samples)
        check_duration(self.num_samples / self.sample_rate, self._limits.max_audio_duration_s,
                       _WHAT, self._item_id)
        return samples


def _check_bytes(num_bytes: int, limits: MediaLimits, item_id: str | None) -> None:
    if num_bytes > limits.max_audio_bytes:
        raise too_large(f"the audio is {num_bytes} bytes, over the limit of "
                        f"{limits.max_audio_bytes}", item_id)


def _check_wav_complete(data: bytes, item_id: str | None) -> None:
    """Raises corrupt_media when the data chunk is shorter than the header says (FFmpeg takes
    the file's end for the chunk's, so its duration cannot tell)."""
    offset = 12  # after "RIFF", the size and "WAVE"
    while offset + 8 <= len(data):
        kind, size = struct.unpack_from("<4sI", data, offset)
        if kind == b"data":
            # 0 and 0xFFFFFFFF: written while streaming, before the size was known.
            if 0 < size < 0xFFFFFFFF and offset + 8 + size > len(data):
                raise corrupt(f"the WAV audio is truncated: {len(data) - offset - 8} of "
                              f"{size} bytes of samples", item_id)
            return
        offset += 8 + size + (size & 1)


def _decode(file: BinaryIO, mime: str, options: dict[str, str], limits: MediaLimits,
            item_id: str | None) -> Iterator[tuple[np.ndarray, int]]:
    """Yields (float32 [samples] mono, rate) per decoded frame of the first audio stream."""
    with open_input(file, mime, {}, options, _WHAT, item_id) as container:
        if not container.streams.audio:
            raise corrupt("the audio has no audio stream", item_id)
        stream = container.streams.audio[0]
        check_codec(stream, AUDIO_CODECS, _WHAT, item_id)
        declared_s = declared_duration(container)
        if declared_s is not None:
            check_duration(declared_s, limits.max_audio_duration_s, _WHAT, item_id)
        rate, num_samples = 0, 0
        with ffmpeg_errors(_WHAT, item_id):
            for frame in container.decode(stream):
                if rate and frame.sample_rate != rate:
                    raise unsupported(f"the audio changes its sample rate from {rate} to "
                                      f"{frame.sample_rate} Hz", item_id)
                rate = frame.sample_rate
                samples = _to_mono(frame)
                num_samples += len(samples)
                check_duration(num_samples / rate, limits.max_audio_duration_s, _WHAT, item_id)
                yield samples, rate
    if not rate:
        raise corrupt("the audio has no samples that decode", item_id)
    check_complete(num_samples / rate, declared_s, _WHAT, item_id)


def _to_mono(frame: av.AudioFrame) -> np.ndarray:
    """float32 [samples]: the mean of the frame's channels, scaled to [-1, 1]."""
    array = frame.to_ndarray()  # planar: [channels, samples]; packed: [1, samples * channels]
    num_channels = len(frame.layout.channels)
    if not frame.format.is_planar:
        array = array.reshape(-1, num_channels).T
    kind = frame.format.name.rstrip("p")
    samples = array.astype(np.float32)
    if kind == "u8":
        samples -= 128.0
    samples /= _FULL_SCALE[kind]
    return samples.mean(axis=0, dtype=np.float32)

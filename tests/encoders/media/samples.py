"""Tiny media files that the tests generate themselves (Pillow, PyAV, numpy, wave).

Video: a red square moving left to right over a blue background, 64x64, FPS frames per second;
frame i has the square's left edge at x = 2 * i. Audio: a sine tone.
"""

from __future__ import annotations

import functools
import io
import os
import tempfile
import wave
from fractions import Fraction

import av
import numpy as np
from PIL import Image

SIZE = 64
FPS = 15
BLUE = (0, 0, 255)
RED = (255, 0, 0)
SQUARE = 16


def video_frame(index: int, size: int = SIZE) -> np.ndarray:
    """uint8 [size, size, 3]: blue, with a red SQUARE x SQUARE square at x = 2 * index."""
    frame = np.empty((size, size, 3), np.uint8)
    frame[:] = BLUE
    x = (2 * index) % (size - SQUARE)
    frame[8:8 + SQUARE, x:x + SQUARE] = RED
    return frame


# Codec name and options for each (container, codec) the tests use.
_VIDEO_CODECS = {
    "vp8": ("libvpx", {"deadline": "realtime", "cpu-used": "8", "b": "200k"}),
    "vp9": ("libvpx-vp9", {"deadline": "realtime", "cpu-used": "8", "b": "200k", "row-mt": "0"}),
    "h264": ("libx264", {"preset": "ultrafast", "tune": "zerolatency", "crf": "23"}),
    "mpeg4": ("mpeg4", {}),
}


@functools.lru_cache(maxsize=None)
def make_video(container: str, codec: str, seconds: float = 2.0, fps: int = FPS,
               size: int = SIZE, movflags: str = "", gop: int = 0) -> bytes:
    """Encodes the moving square; container is a PyAV muxer ("webm", "mp4", "mpegts").

    movflags="faststart" (the index moved to the front after writing) needs a real file.
    """
    if "faststart" in movflags:
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "video.mp4")
            _encode_video(path, container, codec, seconds, fps, size, movflags, gop)
            with open(path, "rb") as file:
                return file.read()
    out = io.BytesIO()
    _encode_video(out, container, codec, seconds, fps, size, movflags, gop)
    return out.getvalue()


def _encode_video(out, container: str, codec: str, seconds: float, fps: int, size: int,
                  movflags: str, gop: int) -> None:
    options = {"movflags": movflags} if movflags else {}
    with av.open(out, "w", format=container, options=options) as muxer:
        name, codec_options = _VIDEO_CODECS[codec]
        stream = muxer.add_stream(name, rate=fps, options=dict(codec_options))
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        if gop:
            stream.codec_context.gop_size = gop
        for index in range(round(seconds * fps)):
            frame = av.VideoFrame.from_ndarray(video_frame(index, size), format="rgb24")
            frame.pts = index
            frame.time_base = Fraction(1, fps)
            muxer.mux(stream.encode(frame))
        muxer.mux(stream.encode(None))


@functools.lru_cache(maxsize=None)
def make_mjpeg(num_frames: int = 6, size: int = SIZE) -> bytes:
    """Concatenated JPEG frames of the moving square (motion JPEG as a camera sends it)."""
    return b"".join(to_bytes(Image.fromarray(video_frame(i, size)), "JPEG", quality=90)
                    for i in range(num_frames))


def tone(freq: float = 440.0, seconds: float = 1.0, rate: int = 16000,
         channels: int = 1) -> np.ndarray:
    """float32 [samples, channels], amplitude 0.5, faded in and out over 10 ms (a hard stop
    makes lossy encoders ring past full scale)."""
    t = np.arange(round(seconds * rate)) / rate
    envelope = np.clip(np.minimum(t, seconds - t) / 0.01, 0, 1)
    mono = (0.5 * envelope * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return np.repeat(mono[:, None], channels, axis=1)


def pcm16(samples: np.ndarray) -> bytes:
    """Interleaved little-endian int16 of float samples [samples, channels]."""
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


def make_wav(samples: np.ndarray, rate: int) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(samples.shape[1])
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(pcm16(samples))
    return out.getvalue()


# Codec, sample format and rate for each audio format the tests encode with PyAV.
_AUDIO_CODECS = {
    "webm-opus": ("webm", "libopus", "s16", 48000),
    "ogg-opus": ("ogg", "libopus", "s16", 48000),
    "ogg-vorbis": ("ogg", "vorbis", "fltp", 44100),
    "mp3": ("mp3", "libmp3lame", "s16p", 44100),
    "mp4-aac": ("mp4", "aac", "fltp", 44100),
    "flac": ("flac", "flac", "s16", 22050),
}


@functools.lru_cache(maxsize=None)
def make_audio(kind: str, freq: float = 440.0, seconds: float = 1.0, channels: int = 1) -> bytes:
    """Encodes a tone with PyAV; kind is a key of _AUDIO_CODECS. Vorbis is always stereo."""
    container, codec, sample_format, rate = _AUDIO_CODECS[kind]
    if codec == "vorbis":
        channels = 2  # FFmpeg's own Vorbis encoder writes stereo only
    samples = tone(freq, seconds, rate, channels)
    out = io.BytesIO()
    with av.open(out, "w", format=container) as muxer:
        stream = muxer.add_stream(codec, rate=rate)
        stream.layout = "mono" if channels == 1 else "stereo"
        if codec == "vorbis":
            stream.codec_context.options = {"strict": "experimental"}
        frame_size = stream.codec_context.frame_size or 1024
        for start in range(0, len(samples), frame_size):
            block = samples[start:start + frame_size]
            frame = _audio_frame(block, sample_format, stream.layout.name, rate)
            frame.pts = start
            muxer.mux(stream.encode(frame))
        muxer.mux(stream.encode(None))
    return out.getvalue()


def _audio_frame(block: np.ndarray, sample_format: str, layout: str, rate: int) -> av.AudioFrame:
    if sample_format.endswith("p"):
        planes = block.T  # [channels, samples]
    else:
        planes = block.reshape(1, -1)  # interleaved [1, samples * channels]
    if sample_format.startswith("s16"):
        planes = (np.clip(planes, -1, 1) * 32767).astype(np.int16)
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(planes), format=sample_format,
                                       layout=layout)
    frame.sample_rate = rate
    return frame


def to_bytes(image: Image.Image, fmt: str, **save_options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **save_options)
    return out.getvalue()


def peak_frequency(samples: np.ndarray, rate: int) -> float:
    """The frequency (Hz) of the largest FFT bin of a mono signal."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.argmax(spectrum) * rate / len(samples))

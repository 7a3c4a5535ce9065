"""Synthetic media for the demo models (docs/demo-model.md): shapes, moving shapes, tones.

Every sample is drawn from a numpy Generator, so a seed gives the same media again:
- image: one shape (SHAPES) of one colour (COLORS) at one position (POSITIONS) on a plain
  background, uint8 [H, W, 3];
- video: one shape of one colour moving in one direction (DIRECTIONS), frames at `fps`;
  `sampled_frames` gives the frames that the service keeps (2 per second, as encoders.media does);
- audio: a steady tone (TONES_HZ), a rising or falling chirp, or 2-4 short beeps, float32 mono
  at 16 kHz.
The encoders (`png_bytes`, `video_bytes`, `wav_bytes`) give the files a client uploads.
Used by tools/train_demo_model.py and the acceptance tests; nothing in the service imports it.
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "diamond", "cross")
COLORS = {"red": (215, 35, 35), "green": (40, 160, 60), "blue": (35, 75, 215),
          "yellow": (235, 200, 30), "purple": (135, 55, 175), "orange": (240, 125, 25)}
# Where a shape sits, as (x, y) fractions of the image.
POSITIONS = {"center": (0.5, 0.5), "left": (0.25, 0.5), "right": (0.75, 0.5), "top": (0.5, 0.25),
             "bottom": (0.5, 0.75)}
# Unit motion of each direction, (dx, dy) with y pointing down.
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
TONES_HZ = (220, 330, 440, 660, 880, 1320)
SOUNDS = ("tone", "chirp", "beeps")
BEEP_COUNTS = (2, 3, 4)
SAMPLE_RATE = 16000
VIDEO_SAMPLE_FPS = 2.0  # encoders.config.MediaLimits.video_sample_fps


@dataclass(frozen=True)
class Sample:
    """One generated item: `kind` image|video|audio, its facts (`meta`) and its media
    (image [H, W, 3] uint8; video a tuple of frames at `fps`; audio float32 [S] at SAMPLE_RATE).
    Training supervises the encoders with what the generator knows: the shape's centre in each
    image or frame (`centers`, (x, y) fractions), audio's `pitch` every 10 ms in Hz (0: silence)
    and the 10 ms frames where beeps start (`onsets`)."""

    kind: str
    meta: dict
    media: object
    fps: int = 0
    centers: tuple[tuple[float, float], ...] = ()
    pitch: np.ndarray | None = None
    onsets: tuple[int, ...] = ()


def _colour(rng: np.random.Generator, name: str) -> tuple[int, int, int]:
    base = np.array(COLORS[name]) + rng.integers(-20, 21, 3)
    return tuple(int(v) for v in np.clip(base, 0, 255))


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    level = rng.integers(200, 256) if rng.random() < 0.7 else rng.integers(0, 50)
    tint = np.clip(level + rng.integers(-10, 11, 3), 0, 255)
    canvas = np.empty((size, size, 3), np.float32)
    canvas[:] = tint
    noise = rng.random() * 6.0
    if noise > 0.5:
        canvas += rng.normal(0.0, noise, canvas.shape)
    return np.clip(canvas, 0, 255).astype(np.uint8)


def draw_shape(canvas: np.ndarray, shape: str, colour: tuple[int, int, int], cx: float, cy: float,
               radius: float) -> np.ndarray:
    """`canvas` with `shape` drawn on it, centred at (cx, cy) pixels, about 2 * radius across."""
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    r = radius
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif shape == "square":
        s = 0.85 * r
        draw.rectangle((cx - s, cy - s, cx + s, cy + s), fill=colour)
    elif shape == "triangle":
        draw.polygon([(cx, cy - r), (cx - 0.95 * r, cy + 0.7 * r), (cx + 0.95 * r, cy + 0.7 * r)], fill=colour)
    elif shape == "diamond":
        draw.polygon([(cx, cy - r), (cx + 0.8 * r, cy), (cx, cy + r), (cx - 0.8 * r, cy)], fill=colour)
    elif shape == "cross":
        t = 0.36 * r
        draw.rectangle((cx - r, cy - t, cx + r, cy + t), fill=colour)
        draw.rectangle((cx - t, cy - r, cx + t, cy + r), fill=colour)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return np.asarray(image)


def _pick(rng: np.random.Generator, given, choices):
    return given if given is not None else choices[int(rng.integers(len(choices)))]


def make_image(rng: np.random.Generator, shape: str | None = None, color: str | None = None,
               position: str | None = None, size: int | None = None) -> Sample:
    """A shape on a plain background; unset facts are drawn at random."""
    shape, color = _pick(rng, shape, SHAPES), _pick(rng, color, tuple(COLORS))
    position = _pick(rng, position, tuple(POSITIONS))
    size = size or int(rng.integers(48, 129))
    fx, fy = POSITIONS[position]
    cx, cy = (np.array([fx, fy]) + rng.uniform(-0.04, 0.04, 2)) * size
    radius = rng.uniform(0.15, 0.22) * size
    image = draw_shape(_background(rng, size), shape, _colour(rng, color), cx, cy, radius)
    return Sample("image", {"shape": shape, "color": color, "position": position}, image,
                  centers=((cx / size, cy / size),))


def make_video(rng: np.random.Generator, shape: str | None = None, color: str | None = None,
               direction: str | None = None, seconds: float | None = None, fps: int = 8,
               size: int = 64) -> Sample:
    """A shape crossing the frame in one direction over `seconds` (1 to 2.5 s when unset)."""
    shape, color = _pick(rng, shape, SHAPES), _pick(rng, color, tuple(COLORS))
    direction = _pick(rng, direction, tuple(DIRECTIONS))
    seconds = seconds if seconds is not None else float(rng.uniform(1.0, 2.5))
    dx, dy = DIRECTIONS[direction]
    across = rng.uniform(0.3, 0.7)  # the coordinate that stays put
    start, end = 0.5 - rng.uniform(0.22, 0.3), 0.5 + rng.uniform(0.22, 0.3)
    radius = rng.uniform(0.14, 0.19) * size
    colour, background = _colour(rng, color), _background(rng, size)
    num_frames = max(2, round(seconds * fps))
    frames, centers = [], []
    for index in range(num_frames):
        along = start + (end - start) * index / (num_frames - 1)
        along = along if dx + dy > 0 else 1.0 - along
        x, y = (along, across) if dx else (across, along)
        frames.append(draw_shape(background, shape, colour, x * size, y * size, radius))
        centers.append((x, y))
    return Sample("video", {"shape": shape, "color": color, "direction": direction}, tuple(frames), fps,
                  centers=tuple(centers))


def sampled_indices(sample: Sample, sample_fps: float = VIDEO_SAMPLE_FPS) -> list[int]:
    """The frames that encoders.media keeps: the first at or after each k / sample_fps seconds."""
    kept, next_s = [], 0.0
    for index in range(len(sample.media)):
        time_s = index / sample.fps
        if time_s >= next_s - 1e-3:
            kept.append(index)
            next_s = (np.floor((time_s + 1e-3) * sample_fps) + 1) / sample_fps
    return kept


def sampled_frames(sample: Sample, sample_fps: float = VIDEO_SAMPLE_FPS) -> tuple[np.ndarray, ...]:
    return tuple(sample.media[i] for i in sampled_indices(sample, sample_fps))


def make_audio(rng: np.random.Generator, sound: str | None = None, frequency: int | None = None,
               direction: str | None = None, count: int | None = None, seconds: float | None = None) -> Sample:
    """A tone, a chirp or beeps of 1 to 2 s (unset facts at random), faded in and out."""
    sound = sound or ("tone" if frequency else _pick(rng, None, SOUNDS))
    seconds = seconds if seconds is not None else float(rng.uniform(1.0, 2.0))
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    frame_t = np.arange(-(-len(t) // 160)) * 0.01  # the 10 ms frames of the pitch track
    amplitude, onsets = rng.uniform(0.2, 0.8), ()
    if sound == "tone":
        frequency = _pick(rng, frequency, TONES_HZ)
        wave_ = np.sin(2 * np.pi * frequency * t + rng.uniform(0, 2 * np.pi))
        pitch = np.full(len(frame_t), float(frequency))
        meta = {"sound": "tone", "frequency_hz": int(frequency)}
    elif sound == "chirp":
        direction = _pick(rng, direction, ("rising", "falling"))
        low, high = rng.uniform(200, 400), rng.uniform(1200, 2400)
        f0, f1 = (low, high) if direction == "rising" else (high, low)
        rate = np.log(f1 / f0) / seconds  # exponential sweep: phase = 2 pi f0 (e^(rate t) - 1) / rate
        wave_ = np.sin(2 * np.pi * f0 * np.expm1(rate * t) / rate)
        pitch = f0 * np.exp(rate * frame_t)
        meta = {"sound": "chirp", "direction": direction}
    elif sound == "beeps":
        count = _pick(rng, count, BEEP_COUNTS)
        beep_hz, length = rng.uniform(500, 1500), rng.uniform(0.08, 0.14)
        starts = [(i + 0.25) * seconds / count for i in range(count)]
        gate = np.zeros_like(t)
        for start in starts:
            gate[(t >= start) & (t < start + length)] = 1.0
        wave_ = gate * np.sin(2 * np.pi * beep_hz * t)
        pitch = beep_hz * np.any([(frame_t >= s) & (frame_t < s + length) for s in starts], axis=0)
        onsets = tuple(int(start / 0.01) for start in starts)
        meta = {"sound": "beeps", "count": int(count)}
    else:
        raise ValueError(f"unknown sound {sound!r}")
    envelope = np.clip(np.minimum(t, seconds - t) / 0.01, 0, 1)
    samples = amplitude * envelope * wave_ + rng.normal(0, rng.uniform(0, 0.01), len(t))
    return Sample("audio", meta, samples.astype(np.float32), pitch=pitch, onsets=onsets)


def png_bytes(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG")
    return out.getvalue()


def video_bytes(sample: Sample, container: str = "webm") -> bytes:
    """The video encoded with PyAV: "webm" (VP8) or "mp4" (H.264)."""
    import av  # only the encoders need PyAV

    codec, options = {"webm": ("libvpx", {"deadline": "realtime", "cpu-used": "8", "b": "400k"}),
                      "mp4": ("libx264", {"preset": "ultrafast", "crf": "20"})}[container]
    out = io.BytesIO()
    with av.open(out, "w", format=container) as muxer:
        stream = muxer.add_stream(codec, rate=sample.fps, options=options)
        stream.height, stream.width = sample.media[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for index, frame in enumerate(sample.media):
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24")
            video_frame.pts, video_frame.time_base = index, Fraction(1, sample.fps)
            muxer.mux(stream.encode(video_frame))
        muxer.mux(stream.encode(None))
    return out.getvalue()


def wav_bytes(samples: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    """16-bit mono WAV."""
    out = io.BytesIO()
    with wave.open(out, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return out.getvalue()

"""Decoding video (MP4/H.264, WebM/VP8/VP9, MPEG-TS, motion JPEG) into sampled RGB frames.

`decode_video` takes a whole file. `StreamingVideoDecoder` takes it chunk by chunk and returns
frames as soon as they decode: a streamable container (WebM, MPEG-TS, motion JPEG, and an MP4
whose index comes first: fast-start or fragmented) is decoded from the bytes received so far, in a
decoder thread (encoders.media.progressive); an MP4 with its index at the end cannot be decoded
before its last byte, so it is buffered and decoded by `finish`. Only the first video stream is
decoded; audio tracks are ignored.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import BinaryIO

import av
import numpy as np

from encoders.config import MediaLimits
from encoders.media.containers import (READ_SIZE, STREAMING_OPTIONS, VIDEO_CODECS,
                                       check_codec, check_complete, check_duration,
                                       declared_duration, ffmpeg_errors, mp4_index_end,
                                       open_input)
from encoders.media.errors import corrupt, too_large
from encoders.media.mime import resolve_mime
from encoders.media.progressive import GrowingStream, ProgressiveDecoder
from encoders.media.sampling import FrameSampler, SampledFrame

_WHAT = "the video"


def decode_video(data: bytes, mime: str | None, limits: MediaLimits,
                 sample_fps: float | None = None, max_frames: int | None = None,
                 item_id: str | None = None) -> list[SampledFrame]:
    """Decodes a whole video file into frames sampled at `sample_fps`, at most `max_frames`.

    sample_fps, max_frames: default to the limits' video_sample_fps and max_video_frames;
        max_frames may not exceed max_video_frames.
    Raises MediaError: media_too_large (bytes, frame size or duration over the limits),
    unsupported_media (mime type or codec), corrupt_media (undecodable or truncated bytes).
    """
    if len(data) > limits.max_video_bytes:
        raise too_large(f"the video is {len(data)} bytes, over the limit of "
                        f"{limits.max_video_bytes}", item_id)
    mime, params = _resolve(mime, data, limits, sample_fps, item_id)
    sampler = _sampler(limits, sample_fps, max_frames)
    return list(_decode(io.BytesIO(data), mime, params, {}, limits, sampler, item_id))


class StreamingVideoDecoder:
    """Decodes one video item while its chunks arrive; see the module docstring.

    push(chunk) returns the sampled frames that the bytes so far made decodable, finish() the
    rest. After a MediaError every later call raises it again; close() releases the decoder
    thread of a video that will not be finished. One caller at a time (the gateway's worker for
    this item), never the event loop: push blocks while it decodes.
    """

    def __init__(self, mime: str | None, limits: MediaLimits, sample_fps: float | None = None,
                 max_frames: int | None = None, item_id: str | None = None) -> None:
        self._declared_mime = mime
        self._limits = limits
        self._sample_fps = sample_fps
        self._sampler = _sampler(limits, sample_fps, max_frames)
        self._item_id = item_id
        self._mime: str | None = None
        self._params: dict[str, str] = {}
        self._held = bytearray()  # bytes kept until the decoding mode is known, or to the end
        self._progressive: ProgressiveDecoder[SampledFrame] | None = None
        self._is_whole_file = False
        self.num_bytes = 0

    @property
    def is_progressive(self) -> bool:
        """Whether frames are decoded as bytes arrive (known once the container's head is in)."""
        return self._progressive is not None

    def push(self, chunk: bytes) -> list[SampledFrame]:
        self.num_bytes += len(chunk)
        if self.num_bytes > self._limits.max_video_bytes:
            self.close()
            raise too_large(f"the video is over the limit of {self._limits.max_video_bytes} "
                            "bytes", self._item_id)
        if self._progressive is not None:
            return self._progressive.push(chunk)
        self._held += chunk
        if self._mime is None:
            self._mime, self._params = _resolve(self._declared_mime, self._held, self._limits,
                                                self._sample_fps, self._item_id)
        if self._is_whole_file:
            return []
        read_size = READ_SIZE
        if self._mime == "video/mp4":
            layout = mp4_index_end(self._held)
            if layout is None:
                return []
            is_index_first, index_end = layout
            if not is_index_first:
                self._is_whole_file = True
                return []
            read_size = max(READ_SIZE, index_end)  # the whole index in the first read
        return self._start_progressive(read_size)

    def finish(self) -> list[SampledFrame]:
        if self._progressive is not None:
            return self._progressive.finish()
        if self.num_bytes == 0:
            raise corrupt("the video is empty", self._item_id)
        data, self._held = bytes(self._held), bytearray()
        return list(_decode(io.BytesIO(data), self._mime, self._params, {}, self._limits,
                            self._sampler, self._item_id))

    def close(self) -> None:
        """Drops the item: stops the decoder thread at its next read; idempotent."""
        self._held = bytearray()
        if self._progressive is not None:
            self._progressive.close()

    def _start_progressive(self, read_size: int) -> list[SampledFrame]:
        mime, params, limits = self._mime, self._params, self._limits
        sampler, item_id = self._sampler, self._item_id

        # Holds no reference to self, so a forgotten decoder can be collected (and its thread
        # closed by the ProgressiveDecoder's finalizer).
        def decode(stream: GrowingStream) -> Iterator[SampledFrame]:
            return _decode(stream, mime, params, STREAMING_OPTIONS, limits, sampler, item_id,
                           read_size)

        self._progressive = ProgressiveDecoder(decode, name=f"video-decode-{item_id}")
        held, self._held = bytes(self._held), bytearray()
        return self._progressive.push(held)


def _resolve(mime: str | None, data: bytes, limits: MediaLimits, sample_fps: float | None,
             item_id: str | None) -> tuple[str, dict[str, str]]:
    mime, params = resolve_mime("video", mime, data, item_id)
    if mime == "image/jpeg":
        # A JPEG sequence has no timestamps: frames come at `fps`, by default the sampling rate.
        fps = params.get("fps", str(sample_fps or limits.video_sample_fps))
        try:
            if not 0 < float(fps) <= 240:
                raise ValueError(fps)
        except ValueError:
            raise corrupt(f"fps={fps!r} in the mime type is not a rate in (0, 240]",
                          item_id) from None
        params = {**params, "fps": fps}
    return mime, params


def _sampler(limits: MediaLimits, sample_fps: float | None, max_frames: int | None
             ) -> FrameSampler:
    max_frames = limits.max_video_frames if max_frames is None else max_frames
    if max_frames > limits.max_video_frames:
        raise ValueError(f"max_frames={max_frames} is over the limit max_video_frames="
                         f"{limits.max_video_frames}")
    return FrameSampler(sample_fps or limits.video_sample_fps, max_frames)


def _decode(file: BinaryIO, mime: str, params: dict[str, str], options: dict[str, str],
            limits: MediaLimits, sampler: FrameSampler, item_id: str | None,
            read_size: int = READ_SIZE) -> Iterator[SampledFrame]:
    with open_input(file, mime, params, options, _WHAT, item_id, read_size) as container:
        if not container.streams.video:
            raise corrupt("the video has no video stream", item_id)
        stream = container.streams.video[0]
        check_codec(stream, VIDEO_CODECS, _WHAT, item_id)
        width, height = stream.codec_context.width, stream.codec_context.height
        if width * height > limits.max_image_pixels:  # 0 when the header does not say
            raise too_large(f"the video's frames are {width}x{height} pixels, over the limit of "
                            f"{limits.max_image_pixels}", item_id)
        declared_s = declared_duration(container)
        if declared_s is not None:
            check_duration(declared_s, limits.max_video_duration_s, _WHAT, item_id)
            sampler.fit_duration(declared_s)
        # A JPEG sequence has no timestamps of its own (FFmpeg's guesses drift when streamed).
        frame_rate = float(params["fps"]) if mime == "image/jpeg" else None
        end_s = yield from _sampled_frames(container, stream, frame_rate, limits, sampler,
                                           item_id)
        check_complete(end_s, declared_s, _WHAT, item_id)


def _sampled_frames(container: av.container.InputContainer, stream: av.VideoStream,
                    frame_rate: float | None, limits: MediaLimits, sampler: FrameSampler,
                    item_id: str | None) -> Iterator[SampledFrame]:
    """Yields the kept frames; returns the end time of the last packet (s, absolute).

    frame_rate: when given, packet (= frame) i is at i / frame_rate whatever its timestamp says.
    """
    start_s: float | None = None
    end_s = 0.0
    num_packets = 0
    with ffmpeg_errors(_WHAT, item_id):
        for packet in container.demux(stream):
            packet_s = None
            if frame_rate and packet.size:
                packet_s = num_packets / frame_rate
                end_s = packet_s + 1 / frame_rate
            elif packet.pts is not None and packet.time_base is not None:
                packet_s = float(packet.pts * packet.time_base)
                end_s = max(end_s, packet_s + float((packet.duration or 0) * packet.time_base))
            num_packets += packet.size > 0
            if packet_s is not None and start_s is not None:
                check_duration(packet_s - start_s, limits.max_video_duration_s, _WHAT, item_id)
            if sampler.is_full:
                continue  # demux only: the duration limit still applies
            for frame in packet.decode():
                time_s = packet_s if frame_rate else frame.time
                time_s = end_s if time_s is None else time_s
                if start_s is None:
                    start_s = time_s
                if sampler.keep(time_s - start_s):
                    yield SampledFrame(_to_rgb(frame, limits, item_id), time_s - start_s)
    if start_s is None:
        raise corrupt("the video has no frame that decodes", item_id)
    return end_s


def _to_rgb(frame: av.VideoFrame, limits: MediaLimits, item_id: str | None) -> np.ndarray:
    if frame.width * frame.height > limits.max_image_pixels:
        raise too_large(f"the video's frames are {frame.width}x{frame.height} pixels, over the "
                        f"limit of {limits.max_image_pixels}", item_id)
    image = frame.to_ndarray(format="rgb24")  # [H, W, 3]
    quarter_turns = round(frame.rotation / 90) % 4  # display matrix: degrees counterclockwise
    if quarter_turns:
        image = np.ascontiguousarray(np.rot90(image, quarter_turns))
    return image

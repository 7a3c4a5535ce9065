"""Opening media containers with PyAV: demuxers and codecs by mime type, and FFmpeg's errors.

The demuxer is chosen from the mime type, never probed, so a client's bytes reach only the
demuxers and decoders named here. Every FFmpeg error becomes a MediaError.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterator
from typing import BinaryIO

import av

from encoders.media.errors import corrupt, too_large, unsupported

# PyAV demuxer of each canonical mime type.
DEMUXERS = {
    "video/mp4": "mp4", "video/webm": "matroska", "video/mp2t": "mpegts", "image/jpeg": "mjpeg",
    "audio/wav": "wav", "audio/webm": "matroska", "audio/ogg": "ogg", "audio/mpeg": "mp3",
    "audio/mp4": "mp4", "audio/flac": "flac", "audio/aac": "aac",
}
# Codecs by their canonical names (AV1 is decoded by libdav1d, MP3 by mp3float, ...).
VIDEO_CODECS = frozenset({"h264", "hevc", "vp8", "vp9", "av1", "mjpeg"})
AUDIO_CODECS = frozenset({
    "opus", "vorbis", "mp3", "aac", "flac", "pcm_u8", "pcm_s16le",
    "pcm_s16be", "pcm_s24le", "pcm_s32le", "pcm_f32le", "pcm_f64le", "pcm_alaw", "pcm_mulaw",
})
# Probing as little as possible lets a streamed container give its first frame from the first
# bytes that hold it; the decoders find what the probe did not.
STREAMING_OPTIONS = {"probesize": "32", "analyzeduration": "1"}
# PyAV's default size of one read. FFmpeg keeps only the latest read for seeking back on a
# non-seekable input, and its MP4 demuxer seeks back while parsing the index: a streamed MP4's
# index must arrive in one read (see mp4_index_end).
READ_SIZE = 32768
# A decode that ends short of the container's declared duration by more than both of these is a
# truncated file (declared durations are exact or, where estimated, estimated from the data).
TRUNCATION_MIN_S = 0.5
TRUNCATION_FRACTION = 0.1


@contextlib.contextmanager
def ffmpeg_errors(what: str, item_id: str | None) -> Iterator[None]:
    """Turns FFmpeg's errors inside the block into MediaError about `what` ("the video")."""
    try:
        yield
    except (av.error.DecoderNotFoundError, av.error.PatchWelcomeError) as error:
        raise unsupported(f"{what} uses a feature that cannot be decoded: {error.strerror}",
                          item_id) from None
    except av.error.FFmpegError as error:
        raise corrupt(f"{what} does not decode: {error.strerror}", item_id) from None


def open_input(file: BinaryIO, mime: str, params: dict[str, str], options: dict[str, str],
               what: str, item_id: str | None, buffer_size: int = READ_SIZE
               ) -> av.container.InputContainer:
    """Opens `file` with the demuxer of `mime`; raises MediaError like ffmpeg_errors.

    buffer_size: the most bytes that one read of `file` asks for.
    """
    options = dict(options)
    if mime == "image/jpeg":
        options["framerate"] = params["fps"]
    with ffmpeg_errors(what, item_id):
        return av.open(file, "r", format=DEMUXERS[mime], options=options,
                       buffer_size=buffer_size)


def check_codec(stream: av.stream.Stream, allowed: frozenset[str], what: str,
                item_id: str | None) -> None:
    codec = stream.codec_context.codec  # None where this build has no decoder for it
    name = codec.canonical_name if codec is not None else "a codec without a decoder"
    if name not in allowed:
        raise unsupported(f"{what} is encoded with {name}, which is not supported "
                          f"(supported: {', '.join(sorted(allowed))})", item_id)


def declared_duration(container: av.container.InputContainer) -> float | None:
    """The container's duration in seconds, or None where it does not say (live WebM)."""
    if container.duration is None or container.duration <= 0:
        return None
    return container.duration / av.time_base


def check_duration(duration_s: float, limit_s: float, what: str, item_id: str | None) -> None:
    if duration_s > limit_s:
        raise too_large(f"{what} is {duration_s:.1f} s long, over the limit of {limit_s:g} s",
                        item_id)


def check_complete(end_s: float, declared_s: float | None, what: str,
                   item_id: str | None) -> None:
    """Raises corrupt_media when decoding ended clearly short of the declared duration."""
    if declared_s is None:
        return
    if end_s < declared_s - max(TRUNCATION_MIN_S, TRUNCATION_FRACTION * declared_s):
        raise corrupt(f"{what} is truncated: it ends at {end_s:.2f} s of a declared "
                      f"{declared_s:.2f} s", item_id)


def mp4_index_end(prefix: bytes) -> tuple[bool, int] | None:
    """Where an MP4's index (moov) lies, from its first bytes.

    (True, end): the index comes first (fast-start or fragmented MP4) and is complete in
    `prefix`, ending at byte `end`: the file can be decoded as it arrives. (False, 0): the media
    data comes first (or the top-level boxes are damaged): it is decoded when complete. None:
    the prefix does not tell yet.
    """
    offset = 0
    while offset + 8 <= len(prefix):
        size, kind = struct.unpack_from(">I4s", prefix, offset)
        if size == 1:
            if offset + 16 > len(prefix):
                return None
            (size,) = struct.unpack_from(">Q", prefix, offset + 8)
        if kind == b"mdat" or size < 8:
            return False, 0
        if kind == b"moov":
            return (True, offset + size) if offset + size <= len(prefix) else None
        offset += size
    return None

"""Video decoding (encoders/media/video.py): containers, sampling, streaming, rotation, errors."""

from __future__ import annotations

import struct
import threading

import numpy as np
import pytest

from encoders.config import MediaLimits
from encoders.media import MediaError, StreamingVideoDecoder, decode_video
from protocol.errors import CORRUPT_MEDIA, MEDIA_TOO_LARGE, UNSUPPORTED_MEDIA
from tests.encoders.media import samples
from tests.encoders.media.samples import BLUE, FPS, RED, make_mjpeg, make_video

LIMITS = MediaLimits(video_sample_fps=2.0, max_video_frames=8)
FRAGMENTED = "frag_keyframe+empty_moov+default_base_moof"

VIDEOS = {  # name: (bytes maker, mime)
    "webm-vp8": (lambda: make_video("webm", "vp8"), "video/webm"),
    "webm-vp9": (lambda: make_video("webm", "vp9"), "video/webm"),
    "mp4-h264": (lambda: make_video("mp4", "h264"), "video/mp4"),
    "fmp4-h264": (lambda: make_video("mp4", "h264", movflags=FRAGMENTED, gop=5), "video/mp4"),
    "ts-h264": (lambda: make_video("mpegts", "h264"), "video/mp2t"),
    "faststart-h264": (lambda: make_video("mp4", "h264", movflags="faststart"), "video/mp4"),
}


def _assert_is_frame(image: np.ndarray, timestamp_s: float) -> None:
    """The frame shows the square where the generator put it at `timestamp_s`."""
    assert image.shape == (samples.SIZE, samples.SIZE, 3) and image.dtype == np.uint8
    x = 2 * round(timestamp_s * FPS)
    assert np.abs(image[16, x + 8].astype(int) - RED).max() < 40
    assert np.abs(image[48, 32].astype(int) - BLUE).max() < 40


@pytest.mark.parametrize("name", sorted(VIDEOS))
def test_every_container_decodes_sampled_frames(name):
    make, mime = VIDEOS[name]
    frames = decode_video(make(), mime, LIMITS)
    # 2 s at 15 fps sampled at 2 fps: the first frame at or after 0, 0.5, 1.0 and 1.5 s.
    # WebM times are in milliseconds.
    assert [f.timestamp_s for f in frames] == pytest.approx([0, 8 / 15, 1.0, 23 / 15], abs=1e-3)
    for frame in frames:
        _assert_is_frame(frame.image, frame.timestamp_s)


def test_max_frames_spread_uniformly_over_a_clip_of_known_duration():
    frames = decode_video(make_video("webm", "vp8"), "video/webm", LIMITS, sample_fps=10,
                          max_frames=3)
    # 3 frames over 2 s: a point every 2/3 s.
    assert [f.timestamp_s for f in frames] == pytest.approx([0, 10 / 15, 20 / 15], abs=1e-3)


def test_motion_jpeg_frames_are_timed_by_the_fps_parameter():
    frames = decode_video(make_mjpeg(6), "image/jpeg;fps=3", LIMITS, sample_fps=10)
    assert [f.timestamp_s for f in frames] == pytest.approx([i / 3 for i in range(6)])
    assert np.abs(frames[2].image[16, 2 * 2 + 8].astype(int) - RED).max() < 40


def _stream(data: bytes, decoder: StreamingVideoDecoder, num_chunks: int = 10):
    """Pushes data in chunks; returns the timestamps returned by each push and by finish."""
    step = -(-len(data) // num_chunks)
    per_push = [[f.timestamp_s for f in decoder.push(data[i:i + step])]
                for i in range(0, len(data), step)]
    return per_push, [f.timestamp_s for f in decoder.finish()]


@pytest.mark.parametrize("name", ["webm-vp8", "webm-vp9", "fmp4-h264", "faststart-h264",
                                  "ts-h264"])
def test_streamable_containers_give_frames_before_the_last_chunk(name):
    make, mime = VIDEOS[name]
    data = make()
    decoder = StreamingVideoDecoder(mime, LIMITS, sample_fps=4, max_frames=8)
    per_push, at_finish = _stream(data, decoder)
    assert decoder.is_progressive
    before_last = [t for pushed in per_push[:-1] for t in pushed]
    assert len(before_last) >= 3  # early frames, before the last chunk arrived
    streamed = before_last + per_push[-1] + at_finish
    whole = decode_video(data, mime, LIMITS, sample_fps=4, max_frames=8)
    assert streamed == pytest.approx([f.timestamp_s for f in whole])


def test_mp4_with_its_index_at_the_end_is_decoded_when_complete():
    data = make_video("mp4", "h264")
    decoder = StreamingVideoDecoder("video/mp4", LIMITS)
    per_push, at_finish = _stream(data, decoder)
    assert not decoder.is_progressive
    assert per_push == [[]] * len(per_push) and len(at_finish) == 4


def test_motion_jpeg_streams():
    decoder = StreamingVideoDecoder("image/jpeg;fps=3", LIMITS, sample_fps=10)
    per_push, at_finish = _stream(make_mjpeg(6), decoder, num_chunks=6)
    assert decoder.is_progressive
    before_last = sum(per_push[:-1], [])
    assert len(before_last) >= 3
    assert before_last + per_push[-1] + at_finish == pytest.approx([i / 3 for i in range(6)])


def _rotated_mp4() -> bytes:
    """The MP4 with its track matrix set to "display rotated 90 degrees clockwise"."""
    data = bytearray(make_video("mp4", "h264"))
    matrix_at = data.index(b"tkhd") + 44  # version 0 tkhd: the matrix follows 40 bytes of fields
    struct.pack_into(">9i", data, matrix_at, 0, 0x10000, 0, -0x10000, 0, 0, 64 << 16, 0, 1 << 30)
    return bytes(data)


def test_the_container_rotation_is_applied():
    image = decode_video(_rotated_mp4(), "video/mp4", LIMITS)[0].image
    # Frame 0 has the square at rows 8-23, columns 0-15; turned clockwise: rows 0-15, cols 40-55.
    assert np.abs(image[8, 47].astype(int) - RED).max() < 40
    assert np.abs(image[16, 8].astype(int) - BLUE).max() < 40


@pytest.mark.parametrize("name, cut", [("webm-vp8", 0.6), ("mp4-h264", 0.9), ("fmp4-h264", 0.6)])
def test_truncated_files_are_corrupt(name, cut):
    make, mime = VIDEOS[name]
    data = make()
    with pytest.raises(MediaError) as caught:
        decode_video(data[:int(len(data) * cut)], mime, LIMITS, item_id="cut")
    assert caught.value.code == CORRUPT_MEDIA and "cut" in str(caught.value)


def test_damaged_and_mislabelled_bytes_are_corrupt():
    data = make_video("webm", "vp8")
    damaged = data[:len(data) // 2] + bytes(300) + data[len(data) // 2 + 300:]
    for bad, mime in [(damaged, "video/webm"), (b"\x00" * 500, "video/webm"),
                      (data, "video/mp4"), (make_mjpeg(1)[:300], "image/jpeg")]:
        with pytest.raises(MediaError) as caught:
            decode_video(bad, mime, LIMITS)
        assert caught.value.code == CORRUPT_MEDIA, mime


def test_a_corrupt_stream_fails_on_push_or_finish_and_keeps_failing():
    data = make_video("webm", "vp8")
    decoder = StreamingVideoDecoder("video/webm", LIMITS, item_id="v")
    decoder.push(data[:len(data) // 2])
    with pytest.raises(MediaError) as caught:
        decoder.push(b"\xff" * 400 + data[len(data) // 2 + 400:])
        decoder.finish()
    assert caught.value.code == CORRUPT_MEDIA and caught.value.item_id == "v"
    with pytest.raises(MediaError):
        decoder.finish()


def test_unsupported_mime_and_codec():
    with pytest.raises(MediaError) as caught:
        decode_video(b"\x00" * 64, "video/avi", LIMITS)
    assert caught.value.code == UNSUPPORTED_MEDIA
    with pytest.raises(MediaError) as caught:
        decode_video(make_video("mp4", "mpeg4"), "video/mp4", LIMITS)
    assert caught.value.code == UNSUPPORTED_MEDIA and "mpeg4" in str(caught.value)


def test_limits_on_bytes_pixels_and_duration():
    webm, ts = make_video("webm", "vp8"), make_video("mpegts", "h264")
    cases = [
        (lambda: decode_video(webm, "video/webm", MediaLimits(max_video_bytes=len(webm) - 1)),
         "bytes"),
        (lambda: decode_video(webm, "video/webm", MediaLimits(max_image_pixels=1000)),
         "pixels"),
        (lambda: decode_video(webm, "video/webm", MediaLimits(max_video_duration_s=1.5)),
         "long"),  # refused from the declared duration, before decoding
        (lambda: _stream(ts, StreamingVideoDecoder("video/mp2t",
                                                   MediaLimits(max_video_duration_s=1.5))),
         "long"),  # MPEG-TS declares none: refused while decoding
        (lambda: _stream(ts, StreamingVideoDecoder("video/mp2t",
                                                   MediaLimits(max_video_bytes=len(ts) // 2))),
         "bytes"),
    ]
    for call, word in cases:
        with pytest.raises(MediaError, match=word) as caught:
            call()
        assert caught.value.code == MEDIA_TOO_LARGE


def test_the_duration_limit_holds_after_the_last_sampled_frame():
    ts = make_video("mpegts", "h264")
    decoder = StreamingVideoDecoder("video/mp2t", MediaLimits(max_video_duration_s=1.5),
                                    sample_fps=10, max_frames=2)
    with pytest.raises(MediaError, match="long"):
        _stream(ts, decoder)


def test_max_frames_may_not_exceed_the_limit():
    with pytest.raises(ValueError, match="max_video_frames"):
        StreamingVideoDecoder("video/webm", LIMITS, max_frames=LIMITS.max_video_frames + 1)


def test_close_ends_the_decoder_thread():
    data = make_video("webm", "vp8")
    decoder = StreamingVideoDecoder("video/webm", LIMITS, item_id="closing")
    decoder.push(data[:len(data) // 2])
    (thread,) = [t for t in threading.enumerate() if t.name == "video-decode-closing"]
    decoder.close()
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_a_corrupt_item_does_not_disturb_another_decoding_beside_it():
    data = make_video("webm", "vp9")
    good = StreamingVideoDecoder("video/webm", LIMITS, item_id="good")
    bad = StreamingVideoDecoder("video/webm", LIMITS, item_id="bad")
    step = len(data) // 6 + 1
    frames, failures = [], []
    for i in range(0, len(data), step):
        frames += good.push(data[i:i + step])
        try:
            bad.push(b"\x1a\x45\xdf\xa3" + bytes(step) if i == 0 else bytes(step))
        except MediaError as error:
            failures.append(error.code)
    frames += good.finish()
    assert failures and set(failures) == {CORRUPT_MEDIA}
    assert [f.timestamp_s for f in frames] == pytest.approx([0, 8 / 15, 1.0, 23 / 15], abs=1e-3)


@pytest.mark.parametrize("name", ["faststart-h264", "fmp4-h264"])
@pytest.mark.parametrize("chunk_size", [37, 101, 250])
def test_a_streamed_mp4_survives_any_chunk_boundaries(name, chunk_size):
    # FFmpeg's MP4 demuxer seeks back inside the index; it must reach the demuxer in one read.
    make, mime = VIDEOS[name]
    data = make()
    decoder = StreamingVideoDecoder(mime, LIMITS)
    per_push, at_finish = _stream(data, decoder, num_chunks=-(-len(data) // chunk_size))
    assert decoder.is_progressive
    assert sum(per_push, []) + at_finish == pytest.approx([0, 8 / 15, 1.0, 23 / 15])

"""Mime parsing, sniffing and resolution (encoders/media/mime.py), and MediaError (errors.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from encoders.media import MediaError, parse_mime, resolve_mime, sniff_mime
from protocol.errors import CORRUPT_MEDIA, UNSUPPORTED_MEDIA
from tests.encoders.media import samples


def test_parse_mime_canonicalises_and_keeps_parameters():
    assert parse_mime("Audio/PCM; Rate=16000 ;channels=2") == (
        "audio/pcm", {"rate": "16000", "channels": "2"})
    assert parse_mime('video/webm;codecs="vp8, opus"') == ("video/webm", {"codecs": "vp8, opus"})
    assert parse_mime("image/jpg") == ("image/jpeg", {})
    assert parse_mime("audio/x-wav") == ("audio/wav", {})
    assert parse_mime(None) == ("", {})


def _image(fmt: str) -> bytes:
    return samples.to_bytes(Image.new("RGB", (8, 8)), fmt)


@pytest.mark.parametrize("make, expected", [
    (lambda: _image("PNG"), "image/png"),
    (lambda: _image("JPEG"), "image/jpeg"),
    (lambda: _image("WEBP"), "image/webp"),
    (lambda: _image("GIF"), "image/gif"),
    (lambda: samples.make_wav(samples.tone(seconds=0.1), 16000), "audio/wav"),
    (lambda: samples.make_video("webm", "vp8"), "video/webm"),
    (lambda: samples.make_video("mp4", "h264"), "video/mp4"),
    (lambda: samples.make_video("mpegts", "h264"), "video/mp2t"),
    (lambda: samples.make_audio("ogg-opus"), "audio/ogg"),
    (lambda: samples.make_audio("mp3"), "audio/mpeg"),
    (lambda: samples.make_audio("flac"), "audio/flac"),
])
def test_sniff_mime_knows_every_generated_format(make, expected):
    assert sniff_mime(make()) == expected


def test_sniff_mime_of_unknown_bytes_is_none():
    assert sniff_mime(b"hello world, not media") is None
    assert sniff_mime(b"") is None


def test_resolve_mime_sniffs_only_generic_types():
    webm = samples.make_video("webm", "vp8")
    assert resolve_mime("video", "application/octet-stream", webm) == ("video/webm", {})
    assert resolve_mime("audio", None, webm) == ("audio/webm", {})
    # A declared type is taken at its word (decoding then fails if the bytes disagree).
    assert resolve_mime("video", "video/mp4", webm) == ("video/mp4", {})


def test_resolve_mime_refuses_unsupported_types_naming_the_item():
    with pytest.raises(MediaError) as caught:
        resolve_mime("video", "video/x-msvideo", b"RIFF", item_id="clip-1")
    assert caught.value.code == UNSUPPORTED_MEDIA and caught.value.item_id == "clip-1"
    assert "clip-1" in str(caught.value) and "video/x-msvideo" in str(caught.value)
    with pytest.raises(MediaError, match="no known type") as caught:
        resolve_mime("image", None, b"garbage")
    assert caught.value.code == UNSUPPORTED_MEDIA
    with pytest.raises(MediaError):
        resolve_mime("audio", "image/png", _image("PNG"))


def test_media_error_maps_onto_the_protocol_error_body():
    error = MediaError(CORRUPT_MEDIA, "the image does not decode", item_id="img")
    info = error.to_info()
    assert (info.code, info.item_id) == (CORRUPT_MEDIA, "img")
    assert info.message == "item 'img': the image does not decode"
    assert str(MediaError(CORRUPT_MEDIA, "plain")) == "plain"
    with pytest.raises(ValueError, match="unknown media error code"):
        MediaError("internal_error", "not a media error")


def test_media_decoding_loads_no_torch():
    # The gateway imports encoders.media; torch belongs to the engine process (DESIGN.md).
    code = ("import sys, encoders.config, encoders.media; "
            "assert not [m for m in sys.modules if m.split('.')[0] in ('torch', 'torchaudio')]")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=Path(__file__).resolve().parents[3])
    assert result.returncode == 0, result.stderr

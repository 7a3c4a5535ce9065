"""Audio decoding (encoders/media/audio.py, pcm.py): formats, mono mix, streaming, errors."""

from __future__ import annotations

import numpy as np
import pytest

from encoders.config import MediaLimits
from encoders.media import MediaError, StreamingAudioDecoder, decode_audio
from protocol.errors import CORRUPT_MEDIA, MEDIA_TOO_LARGE, UNSUPPORTED_MEDIA
from tests.encoders.media.samples import (make_audio, make_video, make_wav, pcm16,
                                          peak_frequency, tone)

LIMITS = MediaLimits()

AUDIO = {  # name: (bytes maker, mime, native rate)
    "wav-mono": (lambda: make_wav(tone(rate=16000), 16000), "audio/wav", 16000),
    "wav-stereo": (lambda: make_wav(tone(rate=22050, channels=2), 22050), "audio/x-wav", 22050),
    "pcm-mono": (lambda: pcm16(tone(rate=16000)), "audio/pcm;rate=16000", 16000),
    "pcm-stereo": (lambda: pcm16(tone(rate=8000, channels=2)), "audio/pcm;rate=8000;channels=2",
                   8000),
    "webm-opus": (lambda: make_audio("webm-opus"), "audio/webm;codecs=opus", 48000),
    "ogg-opus": (lambda: make_audio("ogg-opus"), "audio/ogg", 48000),
    "ogg-vorbis": (lambda: make_audio("ogg-vorbis"), "audio/ogg", 44100),
    "mp3": (lambda: make_audio("mp3"), "audio/mpeg", 44100),
    "mp4-aac": (lambda: make_audio("mp4-aac"), "audio/mp4", 44100),
    "flac": (lambda: make_audio("flac"), "audio/flac", 22050),
}


@pytest.mark.parametrize("name", sorted(AUDIO))
def test_every_format_decodes_to_mono_float32_at_its_native_rate(name):
    make, mime, rate = AUDIO[name]
    samples, sample_rate = decode_audio(make(), mime, LIMITS)
    assert sample_rate == rate
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert len(samples) / rate == pytest.approx(1.0, abs=0.05)
    assert peak_frequency(samples, rate) == pytest.approx(440, abs=5)
    assert np.abs(samples).max() == pytest.approx(0.5, abs=0.1)


def test_channels_are_averaged():
    stereo = tone(rate=16000, channels=2)
    stereo[:, 1] = 0  # right channel silent
    samples, _ = decode_audio(make_wav(stereo, 16000), "audio/wav", LIMITS)
    assert np.abs(samples).max() == pytest.approx(0.25, abs=0.01)
    pcm, _ = decode_audio(pcm16(stereo), "audio/pcm;rate=16000;channels=2", LIMITS)
    np.testing.assert_allclose(pcm, samples, atol=1e-4)


def test_pcm_streams_across_chunks_that_split_samples():
    data = pcm16(tone(rate=16000, channels=2, seconds=0.25))
    whole, _ = decode_audio(data, "audio/pcm;rate=16000;channels=2", LIMITS)
    decoder = StreamingAudioDecoder("audio/pcm;rate=16000;channels=2", LIMITS)
    assert decoder.sample_rate == 16000 or decoder.sample_rate is None
    parts = [decoder.push(data[i:i + 333]) for i in range(0, len(data), 333)]
    parts.append(decoder.finish())
    assert decoder.sample_rate == 16000
    np.testing.assert_array_equal(np.concatenate(parts), whole)


@pytest.mark.parametrize("name", ["webm-opus", "mp3"])
def test_streamable_containers_give_samples_before_the_last_chunk(name):
    make, mime, rate = AUDIO[name]
    data = make()
    decoder = StreamingAudioDecoder(mime, LIMITS)
    step = len(data) // 8 + 1
    parts = [decoder.push(data[i:i + step]) for i in range(0, len(data), step)]
    assert sum(len(p) for p in parts[:-1]) > rate // 2
    parts.append(decoder.finish())
    assert decoder.sample_rate == rate
    assert len(np.concatenate(parts)) / rate == pytest.approx(1.0, abs=0.05)


def test_mp4_audio_streams_when_complete():
    data = make_audio("mp4-aac")
    decoder = StreamingAudioDecoder("audio/mp4", LIMITS)
    assert all(len(decoder.push(data[i:i + 1000])) == 0 for i in range(0, len(data), 1000))
    assert len(decoder.finish()) / 44100 == pytest.approx(1.0, abs=0.05)


def _code(call) -> str:
    with pytest.raises(MediaError) as caught:
        call()
    return caught.value.code


def test_corrupt_and_truncated_audio():
    wav, mp3 = make_wav(tone(rate=16000), 16000), make_audio("mp3")
    assert _code(lambda: decode_audio(wav[:len(wav) // 3], "audio/wav", LIMITS)) == CORRUPT_MEDIA
    assert _code(lambda: decode_audio(b"\x01" * 1000, "audio/ogg", LIMITS)) == CORRUPT_MEDIA
    assert _code(lambda: decode_audio(mp3, "audio/flac", LIMITS)) == CORRUPT_MEDIA
    assert _code(lambda: decode_audio(b"\x00" * 3, "audio/pcm;rate=8000", LIMITS)) == CORRUPT_MEDIA
    only_video = make_video("webm", "vp8")
    with pytest.raises(MediaError, match="no audio stream") as caught:
        decode_audio(only_video, "video/webm", LIMITS, item_id="a1")
    assert caught.value.code == CORRUPT_MEDIA and caught.value.item_id == "a1"


def test_a_partial_pcm_frame_at_the_end_is_corrupt():
    decoder = StreamingAudioDecoder("audio/pcm;rate=8000;channels=2", LIMITS, item_id="mic")
    decoder.push(b"\x00" * 6)
    with pytest.raises(MediaError, match="partial frame") as caught:
        decoder.finish()
    assert caught.value.code == CORRUPT_MEDIA and caught.value.item_id == "mic"


@pytest.mark.parametrize("mime", ["audio/pcm", "audio/pcm;rate=0", "audio/pcm;rate=abc",
                                  "audio/pcm;rate=16000;channels=9", "audio/x-aiff"])
def test_unsupported_types_and_parameters(mime):
    assert _code(lambda: decode_audio(b"\x00" * 64, mime, LIMITS)) == UNSUPPORTED_MEDIA
    assert _code(lambda: StreamingAudioDecoder(mime, LIMITS).push(b"\x00" * 64)) == \
        UNSUPPORTED_MEDIA


def test_limits_on_bytes_and_duration():
    wav = make_wav(tone(rate=16000), 16000)
    short = MediaLimits(max_audio_duration_s=0.5)
    assert _code(lambda: decode_audio(wav, "audio/wav", MediaLimits(max_audio_bytes=1000))) == \
        MEDIA_TOO_LARGE
    assert _code(lambda: decode_audio(wav, "audio/wav", short)) == MEDIA_TOO_LARGE
    pcm = pcm16(tone(rate=16000))
    assert _code(lambda: decode_audio(pcm, "audio/pcm;rate=16000", short)) == MEDIA_TOO_LARGE
    decoder = StreamingAudioDecoder("audio/pcm;rate=16000", short)
    with pytest.raises(MediaError, match="long") as caught:
        for i in range(0, len(pcm), 4000):
            decoder.push(pcm[i:i + 4000])
    assert caught.value.code == MEDIA_TOO_LARGE
    opus = make_audio("webm-opus")
    decoder = StreamingAudioDecoder("audio/webm", MediaLimits(max_audio_bytes=len(opus) // 2))
    with pytest.raises(MediaError, match="bytes"):
        for i in range(0, len(opus), 1000):
            decoder.push(opus[i:i + 1000])

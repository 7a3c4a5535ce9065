"""Torch-free media decoding (Pillow, PyAV, numpy): what the gateway runs in its worker pool."""

from encoders.media.audio import StreamingAudioDecoder, decode_audio
from encoders.media.errors import MEDIA_ERROR_CODES, MediaError
from encoders.media.image import decode_image
from encoders.media.mime import (AUDIO_MIMES, IMAGE_MIMES, MIMES, VIDEO_MIMES, parse_mime,
                                 resolve_mime, sniff_mime)
from encoders.media.sampling import FrameSampler, SampledFrame
from encoders.media.video import StreamingVideoDecoder, decode_video

__all__ = [
    "StreamingAudioDecoder", "decode_audio",
    "MEDIA_ERROR_CODES", "MediaError",
    "decode_image",
    "AUDIO_MIMES", "IMAGE_MIMES", "MIMES", "VIDEO_MIMES", "parse_mime", "resolve_mime",
    "sniff_mime",
    "FrameSampler", "SampledFrame",
    "StreamingVideoDecoder", "decode_video",
]

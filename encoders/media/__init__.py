"""Torch-free media decoding (Pillow, PyAV, numpy): what the gateway runs in its worker pool.

Re-exports resolve lazily, so that importing one submodule (errors, image) does not import
PyAV: the GPU benchmark machine runs the engine without it.
"""

import importlib

_EXPORTS = {
    "StreamingAudioDecoder": "audio", "decode_audio": "audio",
    "MEDIA_ERROR_CODES": "errors", "MediaError": "errors",
    "decode_image": "image",
    "AUDIO_MIMES": "mime", "IMAGE_MIMES": "mime", "MIMES": "mime", "VIDEO_MIMES": "mime", "parse_mime": "mime",
    "resolve_mime": "mime", "sniff_mime": "mime",
    "FrameSampler": "sampling", "SampledFrame": "sampling",
    "StreamingVideoDecoder": "video", "decode_video": "video",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"encoders.media.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'encoders.media' has no attribute {name!r}")

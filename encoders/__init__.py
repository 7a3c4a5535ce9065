"""Media decoding (torch-free, encoders.media) and the vision and audio encoders (torch).

The encoders are re-exported lazily, so that importing encoders.media or encoders.config (as the
gateway does) never loads torch.
"""

import importlib

_LAZY_EXPORTS = {
    "LoadedAudioEncoder": "encoders.loader", "LoadedImageEncoder": "encoders.loader",
    "load_audio_encoder": "encoders.loader", "load_encoders": "encoders.loader",
    "load_image_encoder": "encoders.loader",
    "AudioEncoder": "encoders.audio", "ImageEncoder": "encoders.projector",
    "preprocess_image": "encoders.preprocess", "log_mel_features": "encoders.preprocess",
    "resample_audio": "encoders.preprocess",
    "AudioEncoderConfig": "encoders.encoder_config", "ImageEncoderConfig": "encoders.encoder_config",
    "AudioPreprocessConfig": "encoders.encoder_config", "ImagePreprocessConfig": "encoders.encoder_config",
    "num_audio_tokens": "encoders.encoder_config",
}
__all__ = sorted(_LAZY_EXPORTS)


def __getattr__(name: str):
    if name in _LAZY_EXPORTS:
        return getattr(importlib.import_module(_LAZY_EXPORTS[name]), name)
    raise AttributeError(f"module 'encoders' has no attribute {name!r}")

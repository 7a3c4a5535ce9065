"""Image and audio preprocessing against the Hugging Face processors, on random inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import transformers

from encoders.encoder_config import (AudioPreprocessConfig, audio_preprocess_config, image_preprocess_config,
                                     read_preprocessor_json)
from encoders.preprocess import _mel_filters, log_mel_features, preprocess_image, resample_audio

# Odd sizes, portrait and landscape, smaller and larger than the crop, one already square.
IMAGE_SIZES = [(37, 53), (61, 29), (48, 48), (17, 90), (101, 77), (9, 11)]

PROCESSORS = {
    "clip": lambda: transformers.CLIPImageProcessorPil(size={"shortest_edge": 40}, crop_size={"height": 36, "width": 36}),
    "clip-crop-larger": lambda: transformers.CLIPImageProcessorPil(size={"shortest_edge": 24},
                                                                  crop_size={"height": 32, "width": 31}),
    "clip-bilinear-old-ints": lambda: transformers.CLIPImageProcessorPil(size=30, crop_size=30, resample=2),
    "siglip": lambda: transformers.SiglipImageProcessorPil(size={"height": 32, "width": 48}),
    "siglip-no-normalize": lambda: transformers.SiglipImageProcessorPil(size={"height": 28, "width": 28},
                                                                       do_normalize=False),
    "llava-pad": lambda: transformers.LlavaImageProcessorPil(size={"shortest_edge": 32},
                                                            crop_size={"height": 32, "width": 32}, do_pad=True),
    "llava-pad-no-normalize": lambda: transformers.LlavaImageProcessorPil(
        size={"shortest_edge": 20}, crop_size={"height": 20, "width": 20}, do_pad=True, do_normalize=False),
}


@pytest.mark.parametrize("name", PROCESSORS)
def test_pixels_equal_the_hf_image_processor(tmp_path, name):
    processor = PROCESSORS[name]()
    processor.save_pretrained(tmp_path)
    config = image_preprocess_config(read_preprocessor_json(tmp_path, "image_processor"))
    rng = np.random.default_rng(0)
    for height, width in IMAGE_SIZES:
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        expected = processor(image, return_tensors="np", input_data_format="channels_last")["pixel_values"][0]
        ours = preprocess_image(image, config).numpy()
        assert ours.shape == expected.shape
        assert config.output_size in (None, expected.shape[1:])
        assert np.abs(ours - expected).max() <= 1e-5, (name, height, width)


def test_image_preprocessing_does_not_modify_its_input():
    config = image_preprocess_config({"image_processor_type": "LlavaImageProcessor", "do_pad": True,
                                      "size": {"shortest_edge": 16}, "crop_size": {"height": 16, "width": 16}})
    image = np.random.default_rng(1).integers(0, 256, (20, 31, 3), dtype=np.uint8)
    before = image.copy()
    assert preprocess_image(image, config).shape == (3, 16, 16)
    assert np.array_equal(image, before)


def test_unsupported_image_processors_are_named():
    with pytest.raises(ValueError, match="ConvNextImageProcessor"):
        image_preprocess_config({"image_processor_type": "ConvNextImageProcessor"})
    with pytest.raises(ValueError, match="longest_edge"):
        image_preprocess_config({"image_processor_type": "CLIPImageProcessor",
                                 "size": {"shortest_edge": 20, "longest_edge": 40}})


def test_mel_filters_equal_transformers():
    from transformers.audio_utils import mel_filter_bank

    for num_mels in (80, 128):
        expected = mel_filter_bank(num_frequency_bins=201, num_mel_filters=num_mels, min_frequency=0.0,
                                   max_frequency=8000.0, sampling_rate=16000, norm="slaney", mel_scale="slaney")
        assert np.abs(_mel_filters(num_mels, 400, 16000) - expected).max() < 1e-12


@pytest.mark.parametrize("num_mels", [80, 128])
@pytest.mark.parametrize("num_samples", [1, 12345, 160 * 3000, 500_000])
def test_log_mel_equals_the_whisper_feature_extractor(num_mels, num_samples):
    # Full 30 s chunks, as Qwen2-Audio uses: shorter clips are padded, longer ones cut.
    extractor = transformers.WhisperFeatureExtractor(feature_size=num_mels)
    config = audio_preprocess_config(extractor.to_dict())
    assert config == AudioPreprocessConfig(num_mel_bins=num_mels)
    rng = np.random.default_rng(num_samples)
    samples = (0.2 * rng.standard_normal(num_samples) * np.hanning(num_samples)).astype(np.float32)
    expected = extractor(samples, sampling_rate=16000, return_attention_mask=True, padding="max_length",
                         return_tensors="np")
    ours = log_mel_features(samples, config).numpy()
    assert ours.shape == expected["input_features"][0].shape == (num_mels, 3000)
    assert np.abs(ours - expected["input_features"][0]).max() <= 1e-5
    assert config.num_valid_frames(num_samples) == expected["attention_mask"][0].sum()


def test_resampling_keeps_the_tone_and_gives_the_expected_length():
    rate, seconds = 44100, 0.5
    tone = np.sin(2 * np.pi * 440.0 * np.arange(int(rate * seconds)) / rate).astype(np.float32)
    resampled = resample_audio(tone, rate, 16000)
    assert resampled.dtype == np.float32 and len(resampled) == math.ceil(len(tone) * 16000 / rate)
    spectrum = np.abs(np.fft.rfft(resampled))
    peak_hz = np.argmax(spectrum) * 16000 / len(resampled)
    assert abs(peak_hz - 440.0) < 3.0
    assert resample_audio(tone, 16000, 16000) is tone


def test_audio_inputs_must_be_mono():
    with pytest.raises(ValueError, match="mono"):
        log_mel_features(np.zeros((2, 100), dtype=np.float32), AudioPreprocessConfig())
    with pytest.raises(ValueError, match="mono"):
        resample_audio(np.zeros((100, 2), dtype=np.float32), 8000, 16000)

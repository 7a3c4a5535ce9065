"""Preprocessing of decoded media into encoder inputs, equal to the Hugging Face processors.

Images follow CLIPImageProcessor / SiglipImageProcessor / LlavaImageProcessor (the Pillow
backend, the reference implementation): optional pad to square, Pillow resize, center crop,
rescale in float64 then float32, normalize in float32. Audio follows WhisperFeatureExtractor as
Qwen2AudioProcessor calls it: pad or truncate to chunk_length seconds, |STFT|^2 with a periodic
Hann window, Slaney mel filters, log10, an 8-decade dynamic range, (x + 4) / 4. Settings come
from the checkpoint's preprocessor_config.json (`encoders.encoder_config`).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

from encoders.encoder_config import AudioPreprocessConfig, ImagePreprocessConfig


def preprocess_image(image: np.ndarray, config: ImagePreprocessConfig) -> torch.Tensor:
    """uint8 RGB [H, W, 3] -> float32 pixel values [3, h, w] (on the CPU). Does not modify `image`."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 RGB array [H, W, 3], got {image.dtype} {image.shape}")
    if config.pad_colour is not None:
        image = _pad_to_square(image, config.pad_colour)
    if config.shortest_edge is not None or config.resize_to is not None:
        height, width = config.resize_to or _shortest_edge_size(image.shape[:2], config.shortest_edge)
        image = np.asarray(Image.fromarray(image).resize((width, height), resample=config.resample))
    if config.crop_size is not None:
        image = _center_crop(image, config.crop_size)
    pixels = image.astype(np.float32)
    if config.rescale_factor is not None:
        pixels = (image.astype(np.float64) * config.rescale_factor).astype(np.float32)
    if config.image_mean is not None:
        mean = np.asarray(config.image_mean, dtype=np.float32)
        std = np.asarray(config.image_std, dtype=np.float32)
        pixels = (pixels - mean) / std
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)))


def _shortest_edge_size(size: tuple[int, int], shortest_edge: int) -> tuple[int, int]:
    height, width = size
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(shortest_edge * long / short)  # truncates, as transformers does
    return (new_long, shortest_edge) if width <= height else (shortest_edge, new_long)


def _pad_to_square(image: np.ndarray, colour: tuple[int, int, int]) -> np.ndarray:
    height, width = image.shape[:2]
    if height == width:
        return image
    side = max(height, width)
    square = np.empty((side, side, 3), dtype=image.dtype)
    square[:] = colour
    top, left = (side - height) // 2, (side - width) // 2
    square[top:top + height, left:left + width] = image
    return square


def _center_crop(image: np.ndarray, crop_size: tuple[int, int]) -> np.ndarray:
    """Crops the centre; an image smaller than crop_size is first zero-padded around its centre."""
    height, width = image.shape[:2]
    crop_h, crop_w = crop_size
    pad_top, pad_left = math.ceil(max(crop_h - height, 0) / 2), math.ceil(max(crop_w - width, 0) / 2)
    if pad_top or pad_left:
        canvas = np.zeros((max(crop_h, height), max(crop_w, width), 3), dtype=image.dtype)
        canvas[pad_top:pad_top + height, pad_left:pad_left + width] = image
        image = canvas
    top = (height - crop_h) // 2 + pad_top
    left = (width - crop_w) // 2 + pad_left
    return image[top:top + crop_h, left:left + crop_w]


def resample_audio(samples: np.ndarray, sample_rate: int, target_rate: int) -> np.ndarray:
    """float32 mono [S] at sample_rate -> float32 [ceil(S * target_rate / sample_rate)] at target_rate."""
    if samples.ndim != 1:
        raise ValueError(f"expected mono samples [S], got shape {samples.shape}")
    if sample_rate == target_rate:
        return samples.astype(np.float32, copy=False)
    import torchaudio.functional  # imported here: only audio needs it

    waveform = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))
    return torchaudio.functional.resample(waveform, sample_rate, target_rate).numpy()


def log_mel_features(samples: np.ndarray, config: AudioPreprocessConfig,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """float32 mono [S] at config.sampling_rate -> float32 log-mel [num_mel_bins, num_frames].

    The clip is cut or padded with padding_value to config.num_samples first; use
    `config.num_valid_frames(S)` for how many frames it covers. Does not modify `samples`.
    """
    if samples.ndim != 1:
        raise ValueError(f"expected mono samples [S], got shape {samples.shape}")
    waveform = torch.full((config.num_samples,), config.padding_value, dtype=torch.float32)
    clip = samples[:config.num_samples]
    waveform[:len(clip)] = torch.from_numpy(np.ascontiguousarray(clip, dtype=np.float32))
    waveform = waveform.to(device)
    window = torch.hann_window(config.n_fft, device=device)
    stft = torch.stft(waveform, config.n_fft, config.hop_length, window=window, return_complex=True)
    power = (stft[:, :-1].abs() ** 2).contiguous()  # [n_fft // 2 + 1, num_frames]
    filters = torch.from_numpy(_mel_filters(config.num_mel_bins, config.n_fft, config.sampling_rate))
    mel = filters.to(device, torch.float32).T @ power
    log_mel = torch.clamp(mel, min=1e-10).log10()
    log_mel = torch.maximum(log_mel, log_mel.max() - 8.0)
    return ((log_mel + 4.0) / 4.0).cpu()


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    # Slaney's scale: linear (3 mels per 200 Hz) below 1 kHz, logarithmic above.
    hz = np.asarray(hz, dtype=np.float64)
    log_part = 15.0 + np.log(np.maximum(hz, 1000.0) / 1000.0) * (27.0 / np.log(6.4))
    return np.where(hz >= 1000.0, log_part, 3.0 * hz / 200.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    log_part = 1000.0 * np.exp((np.maximum(mel, 15.0) - 15.0) * (np.log(6.4) / 27.0))
    return np.where(mel >= 15.0, log_part, 200.0 * mel / 3.0)


def _mel_filters(num_mels: int, n_fft: int, sampling_rate: int, max_hz: float = 8000.0) -> np.ndarray:
    """Slaney-normalised triangular filters, float64 [n_fft // 2 + 1, num_mels], from 0 to max_hz."""
    bin_hz = np.linspace(0, sampling_rate // 2, n_fft // 2 + 1)[:, None]
    edges = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(max_hz), num_mels + 2))
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bin_hz - lower) / (centre - lower)
    falling = (upper - bin_hz) / (upper - centre)
    return np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (upper - lower))

"""Load a checkpoint's vision or audio encoder (tower + projector) and its preprocessing.

Only the encoder's tensors are read: they stream from the safetensors files one at a time into
parameters allocated once on the target device; the language model's tensors are never touched.
Checkpoint names may carry transformers-5's `model.` prefix or not, and CLIP's `vision_model.`
level or not. Vision layers after the deepest selected feature layer, CLIP's post-layernorm and
SigLIP's pooling head are skipped; any other tensor that has no place, or a parameter left
unfilled, is an error naming it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from torch import nn

from cache.embedding_cache import content_key
from encoders.audio import AudioEncoder, sinusoidal_positions
from encoders.encoder_config import (AudioEncoderConfig, AudioPreprocessConfig, ImageEncoderConfig,
                                     ImagePreprocessConfig, audio_encoder_config, audio_preprocess_config,
                                     image_encoder_config, image_preprocess_config, num_audio_tokens,
                                     read_config_json, read_preprocessor_json)
from encoders.preprocess import log_mel_features, preprocess_image, resample_audio
from encoders.projector import ImageEncoder


@dataclass(frozen=True)
class LoadedImageEncoder:
    """A LLaVA image encoder ready to run. `model` maps pixel values to embeddings (see
    ImageEncoder); `identity` names this encoder and its preprocessing in cache keys."""

    model: ImageEncoder
    config: ImageEncoderConfig
    preprocess: ImagePreprocessConfig
    identity: str

    @property
    def image_token_id(self) -> int:
        return self.config.image_token_id

    def prepare_pixels(self, images: list[np.ndarray]) -> torch.Tensor:
        """uint8 RGB [H, W, 3] images (any sizes) -> pixel values [N, 3, S, S] on the model's device."""
        weight = self.model.multi_modal_projector.linear_1.weight
        pixels = torch.stack([preprocess_image(image, self.preprocess) for image in images])
        return pixels.to(weight.device, weight.dtype)

    @torch.inference_mode()
    def encode(self, images: list[np.ndarray], pool_stride: int = 1) -> torch.Tensor:
        """Images (or video frames) -> embeddings [N, config.num_frame_tokens(pool_stride), C_text]."""
        return self.model(self.prepare_pixels(images), pool_stride)

    def content_key(self, image: np.ndarray, pool_stride: int = 1) -> str:
        """The embedding-cache key of `image` encoded with this encoder and pool_stride."""
        return content_key(np.ascontiguousarray(image), shape=image.shape, dtype=str(image.dtype),
                           encoder_id=self.identity, settings=f"pool_stride={pool_stride}")


@dataclass(frozen=True)
class LoadedAudioEncoder:
    """A Qwen2-Audio encoder ready to run; clips are float32 mono samples at any sample rate."""

    model: AudioEncoder
    config: AudioEncoderConfig
    preprocess: AudioPreprocessConfig
    identity: str

    @property
    def audio_token_id(self) -> int:
        return self.config.audio_token_id

    def num_tokens(self, num_samples: int, sample_rate: int) -> int:
        """Placeholder tokens of a clip of num_samples at sample_rate (0: too short to encode).
        Audio past the extractor's chunk_length (30 s) is cut off, as Qwen2AudioProcessor does."""
        rate = self.preprocess.sampling_rate
        resampled = num_samples if sample_rate == rate else -(-num_samples * rate // sample_rate)
        return num_audio_tokens(self.preprocess.num_valid_frames(resampled))

    def prepare_features(self, clips: list[tuple[np.ndarray, int]]) -> tuple[torch.Tensor, list[int]]:
        """(samples, sample_rate) clips -> log-mel [B, mels, frames] on the model's device, valid frames."""
        weight = self.model.multi_modal_projector.linear.weight
        rate = self.preprocess.sampling_rate
        waves = [resample_audio(samples, sample_rate, rate) for samples, sample_rate in clips]
        features = torch.stack([log_mel_features(wave, self.preprocess) for wave in waves])
        return features.to(weight.device, weight.dtype), [self.preprocess.num_valid_frames(len(w)) for w in waves]

    @torch.inference_mode()
    def encode(self, clips: list[tuple[np.ndarray, int]]) -> list[torch.Tensor]:
        """Clips -> one embedding tensor [num_tokens(clip), C_text] each."""
        return self.model(*self.prepare_features(clips))

    def content_key(self, samples: np.ndarray, sample_rate: int) -> str:
        """The embedding-cache key of a clip encoded with this encoder."""
        return content_key(np.ascontiguousarray(samples), shape=samples.shape, dtype=str(samples.dtype),
                           encoder_id=self.identity, settings=f"sample_rate={sample_rate}")


def load_encoders(model_dir: str | Path, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
                  ) -> tuple[LoadedImageEncoder | None, LoadedAudioEncoder | None]:
    """The checkpoint's (image, audio) encoders; None where the model has none (a text model)."""
    model_type = read_config_json(model_dir).get("model_type")
    image = load_image_encoder(model_dir, device, dtype) if model_type == "llava" else None
    audio = load_audio_encoder(model_dir, device, dtype) if model_type == "qwen2_audio" else None
    return image, audio


def load_image_encoder(model_dir: str | Path, device: torch.device | str = "cpu",
                       dtype: torch.dtype = torch.float32) -> LoadedImageEncoder:
    config = image_encoder_config(read_config_json(model_dir))
    preprocess = image_preprocess_config(read_preprocessor_json(model_dir, "image_processor"))
    size = config.vision.image_size
    if preprocess.output_size != (size, size):
        raise ValueError(f"the image processor gives {preprocess.output_size} images but the vision tower "
                         f"takes {size}x{size}")
    with torch.device("meta"):
        model = ImageEncoder(config).to(dtype)
    model = model.to_empty(device=device).eval()
    num_layers = config.num_layers_to_run

    def rename(name: str) -> str | None:
        name = name.removeprefix("model.")
        if name.startswith("multi_modal_projector."):
            return name
        if not name.startswith("vision_tower."):
            return None
        rest = name.removeprefix("vision_tower.").removeprefix("vision_model.")
        if rest.startswith(("post_layernorm.", "head.")) or rest.endswith("position_ids"):
            return None
        if rest.startswith("encoder.layers.") and int(rest.split(".")[2]) >= num_layers:
            return None
        return "vision_tower." + rest

    _load_weights(model, model_dir, rename)
    return LoadedImageEncoder(model, config, preprocess, _identity(model_dir, config, preprocess))


def load_audio_encoder(model_dir: str | Path, device: torch.device | str = "cpu",
                       dtype: torch.dtype = torch.float32) -> LoadedAudioEncoder:
    config = audio_encoder_config(read_config_json(model_dir))
    preprocess = audio_preprocess_config(read_preprocessor_json(model_dir, "feature_extractor"))
    if preprocess.num_frames != config.audio.num_input_frames or preprocess.num_mel_bins != config.audio.num_mel_bins:
        raise ValueError(f"the feature extractor gives {preprocess.num_mel_bins} x {preprocess.num_frames} "
                         f"features but the encoder takes {config.audio.num_mel_bins} x {config.audio.num_input_frames}")
    with torch.device("meta"):
        model = AudioEncoder(config).to(dtype)
    model = model.to_empty(device=device).eval()

    def rename(name: str) -> str | None:
        name = name.removeprefix("model.")
        return name if name.startswith(("audio_tower.", "multi_modal_projector.")) else None

    positions = "audio_tower.embed_positions.weight"
    fallback = {positions: lambda: sinusoidal_positions(config.audio.max_source_positions, config.audio.d_model)}
    _load_weights(model, model_dir, rename, fallback)
    return LoadedAudioEncoder(model, config, preprocess, _identity(model_dir, config, preprocess))


def weight_files(model_dir: str | Path) -> list[Path]:
    """The safetensors files of the index, if there is one, else every *.safetensors."""
    model_dir = Path(model_dir)
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        with open(index) as f:
            files = [model_dir / name for name in sorted(set(json.load(f)["weight_map"].values()))]
    else:
        files = sorted(model_dir.glob("*.safetensors"))
    missing = [str(path) for path in files if not path.is_file()]
    if not files or missing:
        raise FileNotFoundError(f"weight files missing in {str(model_dir)!r}: {missing or '*.safetensors'}")
    return files


def _iter_tensors(model_dir: str | Path, rename: Callable[[str], str | None]) -> Iterator[tuple[str, torch.Tensor]]:
    for path in weight_files(model_dir):
        with safe_open(str(path), framework="pt", device="cpu") as f:
            for name in f.keys():
                target = rename(name)
                if target is not None:
                    yield target, f.get_tensor(name)  # read only the tensors we keep


def _load_weights(model: nn.Module, model_dir: str | Path, rename: Callable[[str], str | None],
                  fallbacks: dict[str, Callable[[], torch.Tensor]] | None = None) -> None:
    params = dict(model.named_parameters())
    filled: set[str] = set()
    for name, tensor in _iter_tensors(model_dir, rename):
        param = params.get(name)
        if param is None:
            raise KeyError(f"checkpoint tensor {name!r} has no place in the encoder")
        if tuple(param.shape) != tuple(tensor.shape):
            raise ValueError(f"checkpoint tensor {name!r} has shape {tuple(tensor.shape)}, "
                             f"the encoder expects {tuple(param.shape)}")
        with torch.no_grad():
            param.copy_(tensor)
        filled.add(name)
    for name, make in (fallbacks or {}).items():
        if name not in filled:
            with torch.no_grad():
                params[name].copy_(make())
            filled.add(name)
    missing = sorted(set(params) - filled)
    if missing:
        raise KeyError(f"checkpoint {str(model_dir)!r} lacks encoder weights: {', '.join(missing[:5])}"
                       + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))


def _identity(model_dir: str | Path, config: object, preprocess: object) -> str:
    """Names the encoder: its configs and its weight files (path, size, modification time)."""
    hasher = hashlib.sha256(repr((asdict(config), asdict(preprocess))).encode())
    for path in weight_files(model_dir):
        stat = path.stat()
        hasher.update(repr((str(path.resolve()), stat.st_size, stat.st_mtime_ns)).encode())
    return hasher.hexdigest()[:32]

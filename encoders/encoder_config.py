"""Configuration of the vision and audio encoders, read from a checkpoint's config.json.

transformers writes only the values that differ from its defaults, so every reader here falls
back to the defaults of the transformers config class named in the comment beside it. Nothing
here imports torch: the placeholder counts are plain arithmetic, usable before any weight loads.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

VISION_TOWER_KINDS = ("clip", "siglip")
FEATURE_SELECT_STRATEGIES = ("default", "full")

# CLIPVisionConfig / SiglipVisionConfig defaults, and the CLIP ViT-L/14-336 tower that
# LlavaConfig assumes when config.json has no vision_config.
_CLIP_DEFAULTS = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                      num_channels=3, image_size=224, patch_size=32, hidden_act="quick_gelu", layer_norm_eps=1e-5)
_SIGLIP_DEFAULTS = dict(_CLIP_DEFAULTS, patch_size=16, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6)
_LLAVA_VISION_DEFAULTS = dict(_CLIP_DEFAULTS, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                              num_attention_heads=16, image_size=336, patch_size=14)
# Qwen2AudioEncoderConfig defaults (the Whisper-large-v3 encoder of Qwen2-Audio-7B).
_AUDIO_DEFAULTS = dict(num_mel_bins=128, d_model=1280, encoder_layers=32, encoder_attention_heads=20,
                       encoder_ffn_dim=5120, max_source_positions=1500, activation_function="gelu")
_TEXT_HIDDEN_DEFAULT = 4096  # LlamaConfig / Qwen2Config


@dataclass(frozen=True)
class VisionTowerConfig:
    """A CLIP or SigLIP vision transformer; square images of image_size, square patches."""

    kind: str
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    image_size: int
    patch_size: int
    hidden_act: str
    layer_norm_eps: float
    num_channels: int = 3

    def __post_init__(self) -> None:
        if self.kind not in VISION_TOWER_KINDS:
            raise ValueError(f"vision tower kind must be one of {VISION_TOWER_KINDS}, got {self.kind!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of "
                             f"num_attention_heads {self.num_attention_heads}")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")

    @property
    def has_class_token(self) -> bool:
        return self.kind == "clip"

    @property
    def grid_size(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid_size ** 2

    @property
    def num_positions(self) -> int:
        """Tokens the tower produces per image: the patches, plus CLIP's class token."""
        return self.num_patches + int(self.has_class_token)


@dataclass(frozen=True)
class ImageEncoderConfig:
    """LlavaForConditionalGeneration's image path: tower, feature selection, projector.

    vision_feature_layers: hidden-state indices as transformers counts them (0 is the embedding
    output, -1 the last layer); several are concatenated along the channels.
    """

    vision: VisionTowerConfig
    text_hidden_size: int
    vision_feature_layers: tuple[int, ...]
    vision_feature_select_strategy: str
    projector_hidden_act: str
    projector_bias: bool
    image_token_id: int

    def __post_init__(self) -> None:
        if self.vision_feature_select_strategy not in FEATURE_SELECT_STRATEGIES:
            raise ValueError(f"vision_feature_select_strategy must be one of {FEATURE_SELECT_STRATEGIES}, "
                             f"got {self.vision_feature_select_strategy!r}")
        num_states = self.vision.num_hidden_layers + 1
        for layer in self.vision_feature_layers:
            if not -num_states <= layer < num_states:
                raise ValueError(f"vision_feature_layer {layer} is out of range for a tower of "
                                 f"{self.vision.num_hidden_layers} layers")

    @property
    def resolved_feature_layers(self) -> tuple[int, ...]:
        """The feature layers as non-negative hidden-state indices."""
        num_states = self.vision.num_hidden_layers + 1
        return tuple(layer % num_states for layer in self.vision_feature_layers)

    @property
    def num_layers_to_run(self) -> int:
        """Layers after the deepest selected one never influence the output."""
        return max(self.resolved_feature_layers)

    @property
    def num_image_tokens(self) -> int:
        """Placeholder tokens per image (what LLaVA's processor expands `<image>` to)."""
        return self.vision.num_positions - int(self.vision_feature_select_strategy == "default")

    def num_frame_tokens(self, pool_stride: int = 1) -> int:
        """Placeholder tokens per video frame, after average pooling by pool_stride (1: none)."""
        if pool_stride == 1:
            return self.num_image_tokens
        side = frame_grid_side(self.num_image_tokens)
        return (side // pool_stride) ** 2


def frame_grid_side(num_tokens: int) -> int:
    """Side of the square patch grid that num_tokens fill; ValueError when they are not square."""
    side = int(round(num_tokens ** 0.5))
    if side * side != num_tokens:
        raise ValueError(f"{num_tokens} image tokens do not form a square grid (pooling frames needs the "
                         "'default' strategy on a CLIP tower, or a SigLIP tower with 'full')")
    return side


@dataclass(frozen=True)
class AudioTowerConfig:
    """The Whisper encoder of Qwen2-Audio; it takes exactly 2 * max_source_positions mel frames."""

    num_mel_bins: int
    d_model: int
    encoder_layers: int
    encoder_attention_heads: int
    encoder_ffn_dim: int
    max_source_positions: int
    activation_function: str

    def __post_init__(self) -> None:
        if self.d_model % self.encoder_attention_heads:
            raise ValueError(f"d_model {self.d_model} is not a multiple of "
                             f"encoder_attention_heads {self.encoder_attention_heads}")

    @property
    def num_input_frames(self) -> int:
        return 2 * self.max_source_positions


@dataclass(frozen=True)
class AudioEncoderConfig:
    """Qwen2AudioForConditionalGeneration's audio path: Whisper encoder, 2x pooling, projector."""

    audio: AudioTowerConfig
    text_hidden_size: int
    audio_token_id: int


def num_audio_tokens(num_mel_frames: int) -> int:
    """Placeholder tokens for a clip of num_mel_frames valid mel frames (as Qwen2AudioProcessor
    counts them): conv2 halves the frames (rounding up), the pooling halves them again."""
    after_conv = (num_mel_frames - 1) // 2 + 1
    return max((after_conv - 2) // 2 + 1, 0)


def read_config_json(model_dir: str | Path) -> dict[str, Any]:
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"no config.json in model directory {str(model_dir)!r}")
    with open(path) as f:
        return json.load(f)


def image_encoder_config(config: dict[str, Any]) -> ImageEncoderConfig:
    """The image path of a LLaVA config.json (as a dict); ValueError for another model type."""
    if config.get("model_type") != "llava":
        raise ValueError(f"an image encoder needs a llava checkpoint, got model_type {config.get('model_type')!r}")
    vision = config.get("vision_config") or {"model_type": "clip_vision_model", **_LLAVA_VISION_DEFAULTS}
    vision_type = vision.get("model_type", "clip_vision_model")
    if vision_type not in ("clip_vision_model", "siglip_vision_model"):
        raise ValueError(f"vision tower {vision_type!r} is not supported (CLIP and SigLIP are)")
    kind = "clip" if vision_type == "clip_vision_model" else "siglip"
    defaults = _CLIP_DEFAULTS if kind == "clip" else _SIGLIP_DEFAULTS
    tower = VisionTowerConfig(kind=kind, **{key: vision.get(key, value) for key, value in defaults.items()})
    layers = config.get("vision_feature_layer", -2)
    return ImageEncoderConfig(
        vision=tower,
        text_hidden_size=(config.get("text_config") or {}).get("hidden_size", _TEXT_HIDDEN_DEFAULT),
        vision_feature_layers=(layers,) if isinstance(layers, int) else tuple(layers),
        vision_feature_select_strategy=config.get("vision_feature_select_strategy", "default"),
        projector_hidden_act=config.get("projector_hidden_act", "gelu"),
        projector_bias=config.get("multimodal_projector_bias", True),
        image_token_id=_token_id(config, "image", 32000),
    )


def audio_encoder_config(config: dict[str, Any]) -> AudioEncoderConfig:
    """The audio path of a Qwen2-Audio config.json (as a dict); ValueError for another model type."""
    if config.get("model_type") != "qwen2_audio":
        raise ValueError(f"an audio encoder needs a qwen2_audio checkpoint, got model_type "
                         f"{config.get('model_type')!r}")
    audio = config.get("audio_config") or {}
    tower = AudioTowerConfig(**{key: audio.get(key, value) for key, value in _AUDIO_DEFAULTS.items()})
    return AudioEncoderConfig(
        audio=tower,
        text_hidden_size=(config.get("text_config") or {}).get("hidden_size", _TEXT_HIDDEN_DEFAULT),
        audio_token_id=_token_id(config, "audio", 151646),
    )


def _token_id(config: dict[str, Any], modality: str, default: int) -> int:
    # transformers writes `<modality>_token_index`; some checkpoints spell it `<modality>_token_id`.
    for key in (f"{modality}_token_index", f"{modality}_token_id"):
        if config.get(key) is not None:
            return int(config[key])
    return default


# Preprocessing, from preprocessor_config.json

@dataclass(frozen=True)
class ImagePreprocessConfig:
    """How an RGB image becomes pixel values; a step whose setting is None is skipped.

    shortest_edge: resize so that the shorter side has this length (the longer one truncated, as
    transformers rounds); resize_to: resize to this (height, width); at most one is set.
    resample: Pillow filter code (3 is bicubic). pad_colour: LlavaImageProcessor's do_pad, which
    pads the image to a square of this RGB colour (its mean colour) before resizing.
    """

    shortest_edge: int | None = None
    resize_to: tuple[int, int] | None = None
    resample: int = 3
    crop_size: tuple[int, int] | None = None
    rescale_factor: float | None = 1 / 255
    image_mean: tuple[float, ...] | None = None
    image_std: tuple[float, ...] | None = None
    pad_colour: tuple[int, int, int] | None = None

    def __post_init__(self) -> None:
        if self.shortest_edge is not None and self.resize_to is not None:
            raise ValueError("set at most one of shortest_edge and resize_to")
        if (self.image_mean is None) != (self.image_std is None):
            raise ValueError("image_mean and image_std must be given together")
        if self.image_mean is not None and not len(self.image_mean) == len(self.image_std) == 3:
            raise ValueError("image_mean and image_std need one value per RGB channel")

    @property
    def output_size(self) -> tuple[int, int] | None:
        """(height, width) of every output, or None when it depends on the input."""
        return self.crop_size or self.resize_to


@dataclass(frozen=True)
class AudioPreprocessConfig:
    """WhisperFeatureExtractor's settings; every clip is padded or cut to chunk_length seconds."""

    num_mel_bins: int = 80
    sampling_rate: int = 16000
    hop_length: int = 160
    n_fft: int = 400
    chunk_length: int = 30
    padding_value: float = 0.0

    @property
    def num_samples(self) -> int:
        return self.chunk_length * self.sampling_rate

    @property
    def num_frames(self) -> int:
        return self.num_samples // self.hop_length

    def num_valid_frames(self, num_samples: int) -> int:
        """Mel frames covering a clip of num_samples samples at sampling_rate, as the extractor's
        attention mask counts them; audio past chunk_length is cut off."""
        return -(-min(num_samples, self.num_samples) // self.hop_length)


_CLIP_MEAN, _CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
# Class defaults of CLIPImageProcessor (and LlavaImageProcessor) and of SiglipImageProcessor.
_IMAGE_PROCESSOR_DEFAULTS = {
    "clip": dict(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224}, do_center_crop=True,
                 image_mean=_CLIP_MEAN, image_std=_CLIP_STD),
    "siglip": dict(size={"height": 224, "width": 224}, crop_size=None, do_center_crop=False,
                   image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5)),
}


def read_preprocessor_json(model_dir: str | Path, section: str) -> dict[str, Any]:
    """preprocessor_config.json, or the `section` ("image_processor" or "feature_extractor") of
    processor_config.json, which newer transformers writes instead."""
    model_dir = Path(model_dir)
    if (model_dir / "preprocessor_config.json").is_file():
        with open(model_dir / "preprocessor_config.json") as f:
            return json.load(f)
    if (model_dir / "processor_config.json").is_file():
        with open(model_dir / "processor_config.json") as f:
            processor = json.load(f)
        if isinstance(processor.get(section), dict):
            return processor[section]
    raise FileNotFoundError(f"no preprocessor_config.json (with the {section} settings) in {str(model_dir)!r}")


def image_preprocess_config(settings: dict[str, Any]) -> ImagePreprocessConfig:
    """The image processor of a preprocessor_config.json (as a dict)."""
    kind = settings.get("image_processor_type") or settings.get("feature_extractor_type") or "CLIPImageProcessor"
    if not kind.startswith(("CLIP", "Llava", "Siglip")):
        raise ValueError(f"image processor {kind!r} is not supported (CLIP, LLaVA and SigLIP ones are)")
    merged = dict(_IMAGE_PROCESSOR_DEFAULTS["siglip" if kind.startswith("Siglip") else "clip"])
    merged.update({key: value for key, value in settings.items() if value is not None})
    size = merged["size"] if isinstance(merged["size"], dict) else _size_dict(merged["size"], square=False)
    crop = merged["crop_size"]
    if merged.get("do_resize", True) and not (set(size) <= {"shortest_edge", "height", "width"}):
        raise ValueError(f"image processor size {size} is not supported (shortest_edge or height and width are)")
    shortest_edge = size.get("shortest_edge") if merged.get("do_resize", True) else None
    resize_to = (size["height"], size["width"]) if merged.get("do_resize", True) and "height" in size else None
    if merged["do_center_crop"] and crop is not None:
        crop = crop if isinstance(crop, dict) else _size_dict(crop, square=True)
        crop_size = (crop["height"], crop["width"])
    else:
        crop_size = None
    normalize = merged.get("do_normalize", True)
    return ImagePreprocessConfig(
        shortest_edge=shortest_edge, resize_to=resize_to, resample=int(merged.get("resample", 3)),
        crop_size=crop_size,
        rescale_factor=merged.get("rescale_factor", 1 / 255) if merged.get("do_rescale", True) else None,
        image_mean=tuple(merged["image_mean"]) if normalize else None,
        image_std=tuple(merged["image_std"]) if normalize else None,
        pad_colour=(tuple(int(m * 255) for m in merged["image_mean"])
                    if kind.startswith("Llava") and merged.get("do_pad", False) else None),
    )


def audio_preprocess_config(settings: dict[str, Any]) -> AudioPreprocessConfig:
    """The feature extractor of a preprocessor_config.json (as a dict); Whisper's only."""
    kind = settings.get("feature_extractor_type", "WhisperFeatureExtractor")
    if kind != "WhisperFeatureExtractor":
        raise ValueError(f"feature extractor {kind!r} is not supported (WhisperFeatureExtractor is)")
    defaults = AudioPreprocessConfig()
    return AudioPreprocessConfig(
        num_mel_bins=settings.get("feature_size", defaults.num_mel_bins),
        sampling_rate=settings.get("sampling_rate", defaults.sampling_rate),
        hop_length=settings.get("hop_length", defaults.hop_length),
        n_fft=settings.get("n_fft", defaults.n_fft),
        chunk_length=settings.get("chunk_length", defaults.chunk_length),
        padding_value=settings.get("padding_value", defaults.padding_value),
    )


def _size_dict(size: int | list[int], square: bool) -> dict[str, int]:
    # transformers' get_size_dict for sizes that old configs give as an int or a (height, width).
    if isinstance(size, int):
        return {"height": size, "width": size} if square else {"shortest_edge": size}
    return {"height": size[0], "width": size[1]}

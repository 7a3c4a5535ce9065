"""Tiny random multimodal Hugging Face checkpoints (LLaVA with CLIP or SigLIP, Qwen2-Audio).

Each is saved by transformers with its preprocessor_config.json and, unless tokenizer=False, the
byte-level test tokenizer; the placeholder token ids in config.json are then the tokenizer's
`<image>` / `<audio>` ids (without a tokenizer, FALLBACK_TOKEN_IDS).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

VOCAB_SIZE = 512
FALLBACK_TOKEN_IDS = {"<image>": VOCAB_SIZE - 3, "<audio>": VOCAB_SIZE - 2, "<video>": VOCAB_SIZE - 1}
# Tiny shapes: fast on 2 CPU cores, yet every code path (several heads, layers, patches) is live.
_TEXT = dict(vocab_size=VOCAB_SIZE, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024, rms_norm_eps=1e-6)
_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
               image_size=32, patch_size=8)
# max_source_positions 50 takes 100 mel frames: a 1 s chunk at 16 kHz with hop 160.
_AUDIO = dict(d_model=32, encoder_layers=2, encoder_attention_heads=4, encoder_ffn_dim=64, num_mel_bins=80,
              max_source_positions=50)


def _token_ids(path: Path, tokenizer: bool) -> dict[str, int]:
    if not tokenizer:
        return dict(FALLBACK_TOKEN_IDS)
    from tokenizers import Tokenizer

    from tests.helpers.tokenizers import make_tokenizer_dir

    make_tokenizer_dir(path, kind="bytelevel", vocab_size=VOCAB_SIZE)
    loaded = Tokenizer.from_file(str(path / "tokenizer.json"))
    return {token: loaded.token_to_id(token) for token in FALLBACK_TOKEN_IDS}


def make_llava_checkpoint(path: str | Path, vision: str = "clip", *, seed: int = 0, tokenizer: bool = True,
                          vision_feature_layer: int | list[int] = -2,
                          vision_feature_select_strategy: str = "default",
                          vision_overrides: dict[str, Any] | None = None,
                          processor_overrides: dict[str, Any] | None = None) -> Path:
    """Save a random LlavaForConditionalGeneration with a `vision` ("clip" or "siglip") tower and
    a Llama text model, plus its image processor; returns the directory."""
    import transformers

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    ids = _token_ids(path, tokenizer)
    vision_kwargs = {**_VISION, **(vision_overrides or {})}
    size = vision_kwargs["image_size"]
    if vision == "clip":
        vision_config = transformers.CLIPVisionConfig(**vision_kwargs)
        processor = transformers.CLIPImageProcessorPil(
            **{"size": {"shortest_edge": size}, "crop_size": {"height": size, "width": size},
               **(processor_overrides or {})})
    elif vision == "siglip":
        vision_config = transformers.SiglipVisionConfig(**vision_kwargs)
        processor = transformers.SiglipImageProcessorPil(
            **{"size": {"height": size, "width": size}, **(processor_overrides or {})})
    else:
        raise ValueError(vision)
    config = transformers.LlavaConfig(
        vision_config=vision_config, text_config=transformers.LlamaConfig(**_TEXT),
        image_token_index=ids["<image>"], vision_feature_layer=vision_feature_layer,
        vision_feature_select_strategy=vision_feature_select_strategy,
        image_seq_length=(size // vision_kwargs["patch_size"]) ** 2)
    config.architectures = ["LlavaForConditionalGeneration"]
    _save(transformers.LlavaForConditionalGeneration, config, path, seed)
    processor.save_pretrained(path)
    return path


def make_qwen2_audio_checkpoint(path: str | Path, *, seed: int = 0, tokenizer: bool = True,
                                audio_overrides: dict[str, Any] | None = None) -> Path:
    """Save a random Qwen2AudioForConditionalGeneration with a Qwen2 text model, plus a
    WhisperFeatureExtractor whose chunk fills the encoder's max_source_positions exactly."""
    import transformers

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    ids = _token_ids(path, tokenizer)
    audio = {**_AUDIO, **(audio_overrides or {})}
    hop_length, sampling_rate = 160, 16000
    chunk_length, remainder = divmod(2 * audio["max_source_positions"] * hop_length, sampling_rate)
    if remainder:
        raise ValueError("2 * max_source_positions must be a multiple of 100 (whole seconds of frames)")
    config = transformers.Qwen2AudioConfig(
        audio_config=transformers.Qwen2AudioEncoderConfig(**audio),
        text_config=transformers.Qwen2Config(**_TEXT), audio_token_index=ids["<audio>"])
    config.architectures = ["Qwen2AudioForConditionalGeneration"]
    _save(transformers.Qwen2AudioForConditionalGeneration, config, path, seed)
    extractor = transformers.WhisperFeatureExtractor(feature_size=audio["num_mel_bins"], chunk_length=chunk_length,
                                                     hop_length=hop_length, sampling_rate=sampling_rate)
    extractor.save_pretrained(path)
    return path


def _save(model_class: Any, config: Any, path: Path, seed: int) -> None:
    torch.manual_seed(seed)
    model = model_class(config).eval()
    # transformers' init leaves norms at 1 and biases at 0, and its small weights keep every
    # activation in its near-linear range, where gelu and quick_gelu agree: draw weights that
    # keep unit scale instead, so that a wrong activation, norm or bias shows.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.ndim >= 2:
                param.normal_(0.0, param[0].numel() ** -0.5)
            elif "norm" in name and name.endswith("weight"):
                param.normal_(1.0, 0.1)
            else:
                param.normal_(0.0, 0.1)
    model.save_pretrained(path)


def load_hf_model(path: str | Path) -> Any:
    """The saved checkpoint as transformers loads it: fp32, eval mode, its default (sdpa) attention."""
    import transformers

    config = transformers.AutoConfig.from_pretrained(path)
    model_class = (transformers.LlavaForConditionalGeneration if config.model_type == "llava"
                   else transformers.Qwen2AudioForConditionalGeneration)
    return model_class.from_pretrained(path, dtype=torch.float32).eval()

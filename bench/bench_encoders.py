"""Encoder throughput against transformers in the same run, and the latency of a cache hit.

Towers: a CLIP ViT-L/14-336 with LLaVA-1.5's projector (576 tokens per image) and a Whisper-small
encoder with Qwen2-Audio's pooling and projector. Weights are random (speed does not depend on
their values) and shared: ours are copied from the transformers modules, so the run also reports
how far the outputs are apart. Prints a table and writes JSON.

    python -m bench.bench_encoders [--device cuda] [--dtype bfloat16] [--out bench_encoders.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np
import torch

from cache.embedding_cache import EmbeddingCache, content_key
from encoders.audio import AudioEncoder
from encoders.encoder_config import AudioEncoderConfig, AudioTowerConfig, ImageEncoderConfig, VisionTowerConfig
from encoders.projector import ImageEncoder

TEXT_HIDDEN = 4096  # LLaVA-1.5-7B and Qwen2-Audio-7B
CLIP_L_336 = VisionTowerConfig(kind="clip", hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                               num_attention_heads=16, image_size=336, patch_size=14, hidden_act="quick_gelu",
                               layer_norm_eps=1e-5)
WHISPER_SMALL = AudioTowerConfig(num_mel_bins=80, d_model=768, encoder_layers=12, encoder_attention_heads=12,
                                 encoder_ffn_dim=3072, max_source_positions=1500, activation_function="gelu")


def timed(fn, device: torch.device, iters: int, warmup: int = 3) -> float:
    """Median seconds per call of fn()."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(iters):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def hf_llava(config: ImageEncoderConfig):
    import transformers

    vision = transformers.CLIPVisionConfig(**{k: getattr(config.vision, k) for k in (
        "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "image_size", "patch_size",
        "hidden_act", "layer_norm_eps")})
    text = transformers.LlamaConfig(hidden_size=config.text_hidden_size, intermediate_size=128, num_hidden_layers=1,
                                    num_attention_heads=32, num_key_value_heads=8, vocab_size=512)
    llava = transformers.LlavaConfig(vision_config=vision, text_config=text, vision_feature_layer=-2)
    return transformers.LlavaModel(llava)


def hf_qwen2_audio(config: AudioEncoderConfig):
    import transformers
    from transformers.models.qwen2_audio.modeling_qwen2_audio import Qwen2AudioMultiModalProjector

    tower = config.audio
    audio = transformers.Qwen2AudioEncoderConfig(
        num_mel_bins=tower.num_mel_bins, d_model=tower.d_model, encoder_layers=tower.encoder_layers,
        encoder_attention_heads=tower.encoder_attention_heads, encoder_ffn_dim=tower.encoder_ffn_dim,
        max_source_positions=tower.max_source_positions)
    full = transformers.Qwen2AudioConfig(audio_config=audio, text_config=transformers.Qwen2Config(
        hidden_size=config.text_hidden_size, num_hidden_layers=1, num_attention_heads=32, vocab_size=512))
    return transformers.AutoModel.from_config(audio), Qwen2AudioMultiModalProjector(full)


def bench_images(device, dtype, batch, iters) -> dict:
    config = ImageEncoderConfig(vision=CLIP_L_336, text_hidden_size=TEXT_HIDDEN, vision_feature_layers=(-2,),
                                vision_feature_select_strategy="default", projector_hidden_act="gelu",
                                projector_bias=True, image_token_id=0)
    hf = hf_llava(config).to(device, dtype).eval()
    ours = ImageEncoder(config).to(device, dtype).eval()
    hf_state = hf.state_dict()
    ours.load_state_dict({name: hf_state[name] for name in ours.state_dict()})
    pixels = torch.randn(batch, 3, 336, 336, device=device, dtype=dtype)
    with torch.inference_mode():
        diff = (ours(pixels) - torch.stack(list(hf.get_image_features(pixel_values=pixels).pooler_output)))
        t_ours = timed(lambda: ours(pixels), device, iters)
        t_hf = timed(lambda: hf.get_image_features(pixel_values=pixels), device, iters)
    return {"batch": batch, "tokens_per_image": config.num_image_tokens, "hf_attention": hf.config._attn_implementation,
            "ours_images_per_s": batch / t_ours,
            "hf_images_per_s": batch / t_hf, "max_abs_diff": diff.abs().max().item()}


def bench_audio(device, dtype, batch, iters, seconds: float) -> dict:
    from transformers.masking_utils import create_bidirectional_mask

    config = AudioEncoderConfig(audio=WHISPER_SMALL, text_hidden_size=TEXT_HIDDEN, audio_token_id=0)
    hf_tower, hf_projector = (m.to(device, dtype).eval() for m in hf_qwen2_audio(config))
    ours = AudioEncoder(config).to(device, dtype).eval()
    hf_state = {"audio_tower." + k: v for k, v in hf_tower.state_dict().items()}
    hf_state.update({"multi_modal_projector." + k: v for k, v in hf_projector.state_dict().items()})
    ours.load_state_dict({name: hf_state[name] for name in ours.state_dict()})
    frames = WHISPER_SMALL.num_input_frames
    features = torch.randn(batch, WHISPER_SMALL.num_mel_bins, frames, device=device, dtype=dtype)
    valid = [min(int(seconds * 100), frames)] * batch
    positions = torch.tensor([(n - 1) // 2 + 1 for n in valid], device=device)
    mask_2d = (torch.arange(frames // 2, device=device)[None] < positions[:, None]).long()
    mask = create_bidirectional_mask(config=hf_tower.config, attention_mask=mask_2d,
                                     inputs_embeds=torch.zeros(batch, frames // 2, 1, device=device, dtype=dtype))

    def reference():
        return hf_projector(hf_tower(features, attention_mask=mask).last_hidden_state)

    with torch.inference_mode():
        expected, got = reference(), ours(features, valid)
        diff = max((row - expected[i, :len(row)]).abs().max().item() for i, row in enumerate(got))
        t_ours = timed(lambda: ours(features, valid), device, iters)
        t_hf = timed(reference, device, iters)
    return {"batch": batch, "clip_seconds": seconds, "tokens_per_clip": len(got[0]),
            "hf_attention": hf_tower.config._attn_implementation,
            "ours_clips_per_s": batch / t_ours, "hf_clips_per_s": batch / t_hf, "max_abs_diff": diff}


def bench_cache_hit(device, iters) -> dict:
    """Key an image (1024x768 RGB) and a 30 s clip by content and fetch their embeddings."""
    cache = EmbeddingCache(capacity_bytes=1 << 30)
    rng = np.random.default_rng(0)
    inputs = {"image": rng.integers(0, 256, (768, 1024, 3), dtype=np.uint8),
              "audio_30s": rng.standard_normal(480_000).astype(np.float32)}
    result = {}
    for name, array in inputs.items():
        def lookup(array=array):
            key = content_key(array, shape=array.shape, dtype=str(array.dtype), encoder_id="bench")
            return cache.get(key)
        key = content_key(array, shape=array.shape, dtype=str(array.dtype), encoder_id="bench")
        cache.put(key, torch.zeros(576, TEXT_HIDDEN, device=device, dtype=torch.bfloat16))
        result[f"{name}_hit_ms"] = timed(lookup, torch.device("cpu"), iters) * 1e3
    result["hits"] = cache.num_hits
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", default="bfloat16", choices=("bfloat16", "float16", "float32"))
    parser.add_argument("--image-batch", type=int, default=32)
    parser.add_argument("--audio-batch", type=int, default=16)
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--out", default="bench_encoders.json")
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    torch.manual_seed(0)
    results = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
               "dtype": args.dtype, "torch": torch.__version__,
               "images": bench_images(device, dtype, args.image_batch, args.iters),
               "audio": [bench_audio(device, dtype, args.audio_batch, args.iters, s) for s in (30.0, 5.0)],
               "cache_hit": bench_cache_hit(device, max(args.iters, 50))}
    images = results["images"]
    print(f"{results['device']}  {args.dtype}")
    print(f"{'workload':<34}{'ours /s':>12}{'transformers /s':>18}{'speedup':>9}{'max|diff|':>11}")
    print(f"{'CLIP-L/14-336 + proj, images':<34}{images['ours_images_per_s']:>12.1f}"
          f"{images['hf_images_per_s']:>18.1f}{images['ours_images_per_s'] / images['hf_images_per_s']:>8.2f}x"
          f"{images['max_abs_diff']:>11.2e}")
    for audio in results["audio"]:
        label = f"Whisper-small + proj, {audio['clip_seconds']:.0f} s clips"
        print(f"{label:<34}{audio['ours_clips_per_s']:>12.1f}{audio['hf_clips_per_s']:>18.1f}"
              f"{audio['ours_clips_per_s'] / audio['hf_clips_per_s']:>8.2f}x{audio['max_abs_diff']:>11.2e}")
    hit = results["cache_hit"]
    print(f"cache hit (hash + lookup): image 1024x768 {hit['image_hit_ms']:.3f} ms, "
          f"30 s clip {hit['audio_30s_hit_ms']:.3f} ms")
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()

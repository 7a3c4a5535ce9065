"""Train the demo models that `make serve` serves (docs/demo-model.md), from scratch, on the CPU.

    OMP_NUM_THREADS=1 .venv/bin/python -m tools.train_demo_model --out models/demo --seed 0

Writes three checkpoints with one shared tokenizer:
- vision/: LlavaForConditionalGeneration (SigLIP tower 64x64, 16 tokens per image or video frame,
  Llama text model): shapes, colours, positions in images; shape, colour, direction in videos;
- audio/:  Qwen2AudioForConditionalGeneration (Whisper encoder over 2 s, Qwen2 text model): tones,
  chirps and beeps;
- draft/:  a smaller LlamaForCausalLM trained on the same token sequences (media placeholders
  included), for speculative decoding of either model.
Stages: the vision tower and projector alone, supervised by linear probes (demo_training.py);
then the vision model and then the audio model on the answers, probes still on. Each step of
those trains the target on one batch and the draft on the same token ids. At the end every
checkpoint is evaluated through our own engine (llm_core.LLM) on freshly generated media, and a
record (command, seed, time, losses, accuracy) is written to <out>/training.json.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from tools import demo_data
from tools.demo_training import (AUDIO_SECONDS, IMAGE_SIZE, NUM_IMAGE_TOKENS, PATCH_SIZE, AudioProbe, Probed,
                                 Prompter, VisionProbe, audio_pool, make_batch, train_tokenizer, vision_pool)

TEXT = dict(hidden_size=128, intermediate_size=384, num_hidden_layers=4, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=1024, rms_norm_eps=1e-5, tie_word_embeddings=False)
DRAFT = dict(TEXT, hidden_size=64, intermediate_size=192, num_hidden_layers=2, num_attention_heads=2,
             num_key_value_heads=1)
VISION = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
              image_size=IMAGE_SIZE, patch_size=PATCH_SIZE)
# 2 * max_source_positions mel frames at hop 160 = AUDIO_SECONDS of 16 kHz audio
AUDIO = dict(d_model=64, encoder_layers=3, encoder_attention_heads=4, encoder_ffn_dim=128, num_mel_bins=80,
             max_source_positions=AUDIO_SECONDS * 50)


def _ids(prompter: Prompter) -> dict:
    return dict(eos_token_id=prompter.eos_id, pad_token_id=prompter.pad_id, bos_token_id=None)


def build_vision(path: Path, prompter: Prompter):
    import transformers

    text = transformers.LlamaConfig(vocab_size=prompter.tokenizer.vocab_size, **TEXT, **_ids(prompter))
    config = transformers.LlavaConfig(
        vision_config=transformers.SiglipVisionConfig(**VISION), text_config=text,
        image_token_index=prompter.image_id, vision_feature_layer=-1, vision_feature_select_strategy="full",
        image_seq_length=NUM_IMAGE_TOKENS, projector_hidden_act="gelu")
    config.architectures = ["LlavaForConditionalGeneration"]
    config.eos_token_id, config.pad_token_id = prompter.eos_id, prompter.pad_id
    transformers.SiglipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}).save_pretrained(path)
    return transformers.LlavaForConditionalGeneration(config)


def build_audio(path: Path, prompter: Prompter):
    import transformers

    text = transformers.Qwen2Config(vocab_size=prompter.tokenizer.vocab_size, **TEXT, **_ids(prompter))
    config = transformers.Qwen2AudioConfig(audio_config=transformers.Qwen2AudioEncoderConfig(**AUDIO),
                                           text_config=text, audio_token_index=prompter.audio_id)
    config.architectures = ["Qwen2AudioForConditionalGeneration"]
    config.eos_token_id, config.pad_token_id = prompter.eos_id, prompter.pad_id
    transformers.WhisperFeatureExtractor(feature_size=AUDIO["num_mel_bins"], chunk_length=AUDIO_SECONDS,
                                         hop_length=160, sampling_rate=demo_data.SAMPLE_RATE).save_pretrained(path)
    return transformers.Qwen2AudioForConditionalGeneration(config)


def build_draft(prompter: Prompter):
    import transformers

    config = transformers.LlamaConfig(vocab_size=prompter.tokenizer.vocab_size, **DRAFT, **_ids(prompter))
    config.architectures = ["LlamaForCausalLM"]
    return transformers.LlamaForCausalLM(config)


class Trainer:
    """AdamW with linear warm-up and cosine decay to 10%, gradients clipped at 1. `module(batch,
    targets)` returns the loss: the model's, plus its probe's for a target model."""

    def __init__(self, module: torch.nn.Module, steps: int, lr: float, warmup: int = 30, loss=None) -> None:
        self.module = module.train()
        self.loss = loss or module
        self.optimizer = torch.optim.AdamW(module.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: min(
            (step + 1) / warmup, 0.1 + 0.45 * (1 + math.cos(math.pi * min(step / steps, 1.0)))))

    def step(self, batch: dict, targets: dict) -> float:
        loss = self.loss(batch, targets)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.module.parameters(), 1.0)
        self.optimizer.step()
        self.schedule.step()
        return loss.item()


class TextOnly(torch.nn.Module):
    """The draft model's loss on a batch's token ids alone (its media placeholders are plain tokens)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict, targets: dict) -> torch.Tensor:
        return self.model(**{k: batch[k] for k in ("input_ids", "attention_mask", "labels")}).loss


def train(name: str, target: Trainer, draft: Trainer | None, batches, steps: int, log: dict) -> None:
    """`steps` steps of the target and the draft on the same batches; the curve logs, every 25
    steps, the mean language-model loss (answer tokens), probe loss and draft loss."""
    start, recent = time.perf_counter(), []
    for step in range(steps):
        batch, targets = next(batches)
        target.step(batch, targets)
        recent.append((*target.module.last_losses, draft.step(batch, targets) if draft else 0.0))
        if (step + 1) % 25 == 0 or step + 1 == steps:
            lm, probe, draft_lm = (round(float(v), 4) for v in np.mean(recent, axis=0))
            print(f"{name} step {step + 1}/{steps}: loss {lm:.4f}, probe {probe:.4f}, draft {draft_lm:.4f} "
                  f"({time.perf_counter() - start:.0f}s)", flush=True)
            log.setdefault("curve", []).append([step + 1, lm, probe, draft_lm])
            recent = []
    log.update(steps=steps, seconds=round(time.perf_counter() - start, 1), final_loss=log["curve"][-1][1],
               final_draft_loss=log["curve"][-1][3])


def vision_batches(pool, prompter: Prompter, rng: np.random.Generator, batch_size: int):
    images = [item for item in pool if item.kind == "image"]
    videos = [item for item in pool if item.kind == "video"]
    while True:
        chosen = rng.choice(len(images), batch_size, replace=False)
        yield make_batch([images[i] for i in chosen], prompter, rng, num_text=2)
        chosen = rng.choice(len(videos), batch_size // 2, replace=False)
        yield make_batch([videos[i] for i in chosen], prompter, rng)


def audio_batches(pool, prompter: Prompter, rng: np.random.Generator, batch_size: int):
    while True:
        yield make_batch([pool[i] for i in rng.choice(len(pool), batch_size, replace=False)], prompter, rng)


def save(model, path: Path, tokenizer_dir: Path, dtype: torch.dtype) -> None:
    model.to(dtype).save_pretrained(path, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(tokenizer_dir / name, path / name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.train_demo_model", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="models/demo")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest on a busy machine)")
    parser.add_argument("--encoder-steps", type=int, default=2000, help="vision encoder steps before the LLM's")
    parser.add_argument("--encoder-lr", type=float, default=3e-3)
    parser.add_argument("--vision-steps", type=int, default=500)
    parser.add_argument("--audio-steps", type=int, default=300)
    parser.add_argument("--batch-size", type=int, default=48)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--num-images", type=int, default=3000)
    parser.add_argument("--num-videos", type=int, default=1500)
    parser.add_argument("--num-clips", type=int, default=2000)
    parser.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default="float32",
                        help="dtype of the saved weights")
    parser.add_argument("--eval-samples", type=int, default=20, help="fresh samples per task in the evaluation")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    out = Path(args.out)
    wall = time.perf_counter()
    record: dict = {"command": " ".join(["python -m tools.train_demo_model", *(argv or sys.argv[1:])]),
                    "seed": args.seed, "threads": args.threads, "torch": torch.__version__}

    tokenizer_dir = out / "tokenizer"
    prompter = Prompter(train_tokenizer(tokenizer_dir))
    record["vocab_size"] = prompter.tokenizer.vocab_size
    draft_model = build_draft(prompter)
    draft = Trainer(TextOnly(draft_model), args.vision_steps + args.audio_steps, args.lr)

    start = time.perf_counter()
    vision = build_vision(out / "vision", prompter)
    pool = vision_pool(out / "vision", rng, args.num_images, args.num_videos)
    record["vision"] = {"data_seconds": round(time.perf_counter() - start, 1),
                        "params": sum(p.numel() for p in vision.parameters())}
    probed = Probed(vision, VisionProbe(TEXT["hidden_size"]))
    # Stage 1: the tower and projector alone learn to show shape, colour, position and motion.
    record["vision_encoder"] = {}
    train("vision encoder", Trainer(probed, args.encoder_steps, args.encoder_lr, loss=probed.encoder_loss), None,
          vision_batches(pool, prompter, rng, 2 * args.batch_size), args.encoder_steps, record["vision_encoder"])
    # Stage 2: everything, on the answers (and the probe still).
    train("vision", Trainer(probed, args.vision_steps, args.lr), draft,
          vision_batches(pool, prompter, rng, args.batch_size), args.vision_steps, record["vision"])
    save(vision.eval(), out / "vision", tokenizer_dir, getattr(torch, args.dtype))
    del pool

    start = time.perf_counter()
    audio = build_audio(out / "audio", prompter)
    pool = audio_pool(out / "audio", rng, args.num_clips)
    record["audio"] = {"data_seconds": round(time.perf_counter() - start, 1),
                       "params": sum(p.numel() for p in audio.parameters())}
    train("audio", Trainer(Probed(audio, AudioProbe(TEXT["hidden_size"])), args.audio_steps, args.lr), draft,
          audio_batches(pool, prompter, rng, args.batch_size), args.audio_steps, record["audio"])
    save(audio.eval(), out / "audio", tokenizer_dir, getattr(torch, args.dtype))
    save(draft_model.eval(), out / "draft", tokenizer_dir, getattr(torch, args.dtype))
    record["draft"] = {"params": sum(p.numel() for p in draft_model.parameters())}
    shutil.rmtree(tokenizer_dir)
    record["train_seconds"] = round(time.perf_counter() - wall, 1)

    from tools.eval_demo_model import evaluate

    record["accuracy"] = evaluate(out, args.eval_samples, seed=args.seed + 1000)
    record["wall_seconds"] = round(time.perf_counter() - wall, 1)
    (out / "training.json").write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record["accuracy"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Tokenizer, data pools, batches and the encoders' training probes for tools/train_demo_model.py.

The media go through the engine's own decoding and preprocessing (encoders.media,
encoders.preprocess) and the prompts through its tokenizer and chat template, so the model is
trained on exactly the inputs it is served: a video is encoded (WebM/VP8, MP4/H.264 or a JPEG
sequence), decoded and sampled at 2 frames per second as the service does; every placeholder
marker becomes its run of placeholder ids. Loss is taken on the answer and its <|im_end|> only.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from encoders.config import DEFAULT_MEDIA_LIMITS
from encoders.encoder_config import (audio_preprocess_config, image_preprocess_config, num_audio_tokens,
                                     read_preprocessor_json)
from encoders.preprocess import log_mel_features, preprocess_image
from llm_core.tokenizer import Tokenizer
from tools import demo_data, demo_prompts

IGNORE = -100
IMAGE_SIZE, PATCH_SIZE = 64, 16
NUM_IMAGE_TOKENS = (IMAGE_SIZE // PATCH_SIZE) ** 2
AUDIO_SECONDS = 2  # the feature extractor's chunk: longer clips are cut


def train_tokenizer(out_dir: Path, vocab_size: int = 512) -> Tokenizer:
    """A byte-level BPE on the demo corpus, with ChatML specials and the media placeholders."""
    from tokenizers import Tokenizer as Backend, decoders, models, pre_tokenizers, processors, trainers

    backend = Backend(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                                  special_tokens=list(demo_prompts.SPECIAL_TOKENS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator(demo_prompts.corpus() * 4, trainer)
    out_dir.mkdir(parents=True, exist_ok=True)
    backend.save(str(out_dir / "tokenizer.json"))
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": None, "eos_token": demo_prompts.EOS_TOKEN,
              "pad_token": "<|endoftext|>", "unk_token": None,
              "additional_special_tokens": ["<|im_start|>", "<image>", "<video>", "<audio>"],
              "add_bos_token": False, "add_eos_token": False, "model_max_length": 1024,
              "clean_up_tokenization_spaces": False, "chat_template": demo_prompts.CHAT_TEMPLATE}
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (out_dir / "special_tokens_map.json").write_text(json.dumps(
        {"eos_token": demo_prompts.EOS_TOKEN, "pad_token": "<|endoftext|>",
         "additional_special_tokens": config["additional_special_tokens"]}, indent=2))
    return Tokenizer.from_dir(out_dir)


@dataclass
class Prompter:
    """Token ids of prompts and answers, rendered as the engine renders them."""

    tokenizer: Tokenizer
    image_id: int = field(init=False)
    audio_id: int = field(init=False)
    _cache: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.image_id = self.tokenizer.token_to_id("<image>")
        self.audio_id = self.tokenizer.token_to_id("<audio>")
        self.eos_id = self.tokenizer.token_to_id(demo_prompts.EOS_TOKEN)
        self.pad_id = self.tokenizer.token_to_id("<|endoftext|>")
        self.markers = {self.tokenizer.token_to_id(t): t for t in ("<image>", "<video>", "<audio>")}

    def prompt(self, kind: str, question: str, media_first: bool, num_media_tokens: int) -> list[int]:
        key = (kind, question, media_first)
        if key not in self._cache:
            text = self.tokenizer.apply_chat_template(demo_prompts.chat(kind, question, media_first),
                                                      add_generation_prompt=True)
            self._cache[key] = self.tokenizer.encode(text, add_special_tokens=False)
        ids = []
        for token in self._cache[key]:
            if token in self.markers:
                run_id = self.audio_id if kind == "audio" else self.image_id
                ids += [run_id] * num_media_tokens
            else:
                ids.append(token)
        return ids

    def answer(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False) + [self.eos_id]


@dataclass
class Item:
    """One pooled training item. `targets`: the probe's labels, per image or frame [frames, 3]
    (shape, colour, position) or per audio token [num_tokens, 2] (pitch bin, onset)."""

    kind: str
    meta: dict
    inputs: torch.Tensor  # pixels [frames, 3, S, S] (fp16) or log-mel [mels, frames]
    num_tokens: int  # placeholder tokens in the prompt
    targets: torch.Tensor
    num_frames: int = 0  # audio: valid mel frames


def _jpeg(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="JPEG", quality=int(rng.integers(60, 96)))
    return np.asarray(Image.open(out).convert("RGB"))


def _decoded_frames(sample: demo_data.Sample, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """The frames the service would hand the engine for this video, after a random codec."""
    from encoders.media import decode_video

    codec = rng.random()
    if codec < 0.4 or codec >= 0.8:
        container = "webm" if codec < 0.4 else "mp4"
        frames = decode_video(demo_data.video_bytes(sample, container), f"video/{container}", DEFAULT_MEDIA_LIMITS)
        return tuple(frame.image for frame in frames)
    return tuple(_jpeg(frame, rng) for frame in demo_data.sampled_frames(sample))


def vision_pool(model_dir: Path, rng: np.random.Generator, num_images: int, num_videos: int) -> list[Item]:
    preprocess = image_preprocess_config(read_preprocessor_json(model_dir, "image_processor"))
    items = []
    for _ in range(num_images):
        sample = demo_data.make_image(rng)
        image = sample.media if rng.random() < 0.75 else _jpeg(sample.media, rng)
        pixels = preprocess_image(image, preprocess)[None].half()
        items.append(Item("image", sample.meta, pixels, NUM_IMAGE_TOKENS, _frame_targets(sample, sample.centers)))
    for _ in range(num_videos):
        sample = demo_data.make_video(rng)
        frames = _decoded_frames(sample, rng)
        centers = [sample.centers[i] for i in demo_data.sampled_indices(sample)]
        if len(centers) != len(frames):
            raise AssertionError(f"the decoder kept {len(frames)} frames, the sampling rule {len(centers)}")
        pixels = torch.stack([preprocess_image(frame, preprocess) for frame in frames]).half()
        items.append(Item("video", sample.meta, pixels, NUM_IMAGE_TOKENS * len(frames),
                          _frame_targets(sample, centers)))
    return items


def _frame_targets(sample: demo_data.Sample, centers) -> torch.Tensor:
    """[frames, 5]: shape, colour and position classes (position: images only), then the centre (x, y) * 1000."""
    meta = sample.meta
    position = list(demo_data.POSITIONS).index(meta["position"]) if "position" in meta else IGNORE
    classes = [demo_data.SHAPES.index(meta["shape"]), list(demo_data.COLORS).index(meta["color"]), position]
    return torch.tensor([classes + [round(1000 * x), round(1000 * y)] for x, y in centers])


NUM_PITCH_CLASSES = 16  # silence, then third-octave bins from 150 Hz


def _token_targets(sample: demo_data.Sample, num_tokens: int) -> torch.Tensor:
    """Per audio token (4 mel frames, 40 ms): its pitch class at the middle, and whether a beep starts in it."""
    targets = torch.zeros((num_tokens, 2), dtype=torch.long)
    for i in range(num_tokens):
        frame = 4 * i + 2
        hz = sample.pitch[frame] if frame < len(sample.pitch) else 0.0
        if hz > 0:
            targets[i, 0] = 1 + int(np.clip(round(3 * np.log2(hz / 150.0)), 0, NUM_PITCH_CLASSES - 2))
        targets[i, 1] = int(any(4 * i <= onset < 4 * i + 4 for onset in sample.onsets))
    return targets


def audio_pool(model_dir: Path, rng: np.random.Generator, num_clips: int) -> list[Item]:
    preprocess = audio_preprocess_config(read_preprocessor_json(model_dir, "feature_extractor"))
    items = []
    for _ in range(num_clips):
        sample = demo_data.make_audio(rng)
        features = log_mel_features(sample.media, preprocess)
        num_frames = preprocess.num_valid_frames(len(sample.media))
        num_tokens = num_audio_tokens(num_frames)
        items.append(Item("audio", sample.meta, features, num_tokens, _token_targets(sample, num_tokens), num_frames))
    return items


def make_batch(items: list[Item], prompter: Prompter, rng: np.random.Generator,
               num_text: int = 0) -> tuple[dict[str, torch.Tensor], dict]:
    """(the model's inputs, the probe's targets). Inputs: input_ids / attention_mask / labels
    [B, L] (right-padded) and the media in order: pixel_values [N, 3, S, S] for LLaVA,
    input_features [B, mels, T] + feature_attention_mask for Qwen2-Audio. `num_text` text-only
    greetings are added after the media items."""
    rows = []
    for item in items:
        task, question = demo_prompts.draw_question(rng, item.kind)
        prompt = prompter.prompt(item.kind, question, rng.random() < 0.85, item.num_tokens)
        rows.append((prompt, prompter.answer(demo_prompts.answer(item.kind, task, item.meta))))
    for _ in range(num_text):
        questions = demo_prompts.QUESTIONS["text"]["hello"]
        question = questions[int(rng.integers(len(questions)))]
        greeting = demo_prompts.answer("text", "hello", {})
        rows.append((prompter.prompt("text", question, True, 0), prompter.answer(greeting)))
    length = max(len(p) + len(a) for p, a in rows)
    input_ids = torch.full((len(rows), length), prompter.pad_id)
    labels = torch.full((len(rows), length), IGNORE)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, (prompt, answer) in enumerate(rows):
        ids = prompt + answer
        input_ids[i, :len(ids)] = torch.tensor(ids)
        labels[i, len(prompt):len(ids)] = torch.tensor(answer)
        mask[i, :len(ids)] = 1
    batch = {"input_ids": input_ids, "attention_mask": mask, "labels": labels}
    targets: dict = {}
    if items and items[0].kind == "audio":
        batch["input_features"] = torch.stack([item.inputs for item in items])
        frames = torch.arange(batch["input_features"].shape[-1])
        valid = torch.tensor([item.num_frames for item in items])
        batch["feature_attention_mask"] = (frames[None, :] < valid[:, None]).long()
        max_tokens = max(item.num_tokens for item in items)
        tokens = torch.full((len(items), max_tokens, 2), IGNORE)
        for i, item in enumerate(items):
            tokens[i, :item.num_tokens] = item.targets
        targets["tokens"] = tokens
        targets["clips"] = torch.tensor([_clip_targets(item.meta) for item in items])
    elif items:
        batch["pixel_values"] = torch.cat([item.inputs for item in items]).float()
        targets["frames"] = torch.cat([item.targets for item in items])
        ends = np.cumsum([len(item.targets) for item in items])
        videos = [(end - len(item.targets), end - 1, list(demo_data.DIRECTIONS).index(item.meta["direction"]))
                  for item, end in zip(items, ends) if item.kind == "video"]
        if videos:
            targets["videos"] = torch.tensor(videos)
    return batch, targets


class VisionProbe(nn.Module):
    """Linear read-outs of the mean of an image's (or frame's) projected tokens, for training
    only (never saved): shape, colour, position class and centre of each image or frame, and a
    video's direction from its last frame's mean minus its first's. They give the from-scratch
    tower a direct signal, and reading the mean makes every fact, the position too, visible to
    a language model that attends to the image tokens without knowing their order."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.sizes = (len(demo_data.SHAPES), len(demo_data.COLORS), len(demo_data.POSITIONS))
        self.frame = nn.Linear(hidden_size, sum(self.sizes) + 2)
        self.motion = nn.Linear(hidden_size, len(demo_data.DIRECTIONS))

    def loss(self, features: torch.Tensor, frames: torch.Tensor, videos: torch.Tensor | None = None) -> torch.Tensor:
        pooled = features.mean(1)  # [N, hidden]
        out = self.frame(pooled)
        logits = out[:, :sum(self.sizes)].split(self.sizes, dim=-1)
        loss = sum(_cross_entropy(lg, frames[:, i]) for i, lg in enumerate(logits))
        loss = loss + 20.0 * F.mse_loss(out[:, -2:], frames[:, 3:].float() / 1000)
        if videos is not None:
            loss = loss + F.cross_entropy(self.motion(pooled[videos[:, 1]] - pooled[videos[:, 0]]), videos[:, 2])
        return loss


# The clip-level classes of the audio probe: what a clip is, and a tone's frequency.
SOUND_CLASSES = ("tone", "rising", "falling", 2, 3, 4)


def _clip_targets(meta: dict) -> list[int]:
    kind = {"tone": "tone", "chirp": meta.get("direction"), "beeps": meta.get("count")}[meta["sound"]]
    tone = demo_data.TONES_HZ.index(meta["frequency_hz"]) if meta["sound"] == "tone" else IGNORE
    return [SOUND_CLASSES.index(kind), tone]


class AudioProbe(nn.Module):
    """Read-outs of the projected audio tokens (training only): per token its pitch class and
    whether a beep starts in it; from the mean of a clip's tokens what the clip is (a tone, a
    rising or falling chirp, 2, 3 or 4 beeps) and a tone's frequency, so that every token
    carries the clip's facts."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.head = nn.Linear(hidden_size, NUM_PITCH_CLASSES + 2)
        self.clip = nn.Linear(hidden_size, len(SOUND_CLASSES) + len(demo_data.TONES_HZ))

    def loss(self, features: torch.Tensor, tokens: torch.Tensor, clips: torch.Tensor) -> torch.Tensor:
        features = features[:, :tokens.shape[1]]  # [B, T, hidden]
        pitch, onset = self.head(features).split((NUM_PITCH_CLASSES, 2), dim=-1)
        valid = (tokens[..., 0] != IGNORE).unsqueeze(-1).to(features.dtype)  # [B, T, 1]
        pooled = (features * valid).sum(1) / valid.sum(1)
        kind, tone = self.clip(pooled).split((len(SOUND_CLASSES), len(demo_data.TONES_HZ)), dim=-1)
        return (_cross_entropy(pitch.flatten(0, 1), tokens[..., 0].flatten())
                + _cross_entropy(onset.flatten(0, 1), tokens[..., 1].flatten())
                + _cross_entropy(kind, clips[:, 0]) + _cross_entropy(tone, clips[:, 1]))


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the labels that are not IGNORE (0 when all are)."""
    keep = labels != IGNORE
    return F.cross_entropy(logits[keep], labels[keep]) if bool(keep.any()) else logits.sum() * 0.0


class Probed(nn.Module):
    """A multimodal model whose loss adds its probe's loss on the projector's output (captured by a hook)."""

    def __init__(self, model: nn.Module, probe: nn.Module) -> None:
        super().__init__()
        self.model, self.probe = model, probe
        self._captured: list[torch.Tensor] = []
        projector = next(m for name, m in model.named_modules() if name.endswith("multi_modal_projector"))
        projector.register_forward_hook(lambda module, args, output: self._captured.append(output))

    def encoder_loss(self, batch: dict, targets: dict) -> torch.Tensor:
        """The probe's loss alone, running only the vision tower and projector (LLaVA): stage 1."""
        self.model.model.get_image_features(pixel_values=batch["pixel_values"], vision_feature_layer=-1,
                                            vision_feature_select_strategy="full")
        loss = self.probe.loss(self._captured.pop(), **targets)
        self._captured.clear()
        self.last_losses = (0.0, loss.item())
        return loss

    def forward(self, batch: dict, targets: dict) -> torch.Tensor:
        """The language-model loss plus the probe's; `last_losses` keeps both as floats."""
        lm_loss = self.model(**batch).loss
        probe_loss = self.probe.loss(self._captured.pop(), **targets) if self._captured else torch.zeros(())
        self._captured.clear()
        self.last_losses = (lm_loss.item(), probe_loss.item())
        return lm_loss + probe_loss


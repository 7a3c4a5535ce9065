"""Chat messages with media parts -> prompt token ids with each placeholder run expanded.

Each media part is decoded (encoders.media), keyed by content for the encoder that takes it, and
stands in the prompt as a run of the model's placeholder token as long as its embeddings: an
image `num_image_tokens`, a video frames x `num_frame_tokens(pool_stride)` (frames go through the
vision tower; the run uses the image token), an audio clip `num_tokens(samples, rate)`.

The chat template sees each media part as the model's template expects it: where the template
renders a {"type": kind} part to the placeholder token itself (checked once, on a probe), the
part reaches it as such; otherwise the placeholder token's text takes the part's place in the
content string. The marker tokens found in the rendered prompt must then match the media parts
one to one, in order, and each is replaced by its item's run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cache.embedding_cache import content_key
from encoders.config import DEFAULT_MEDIA_LIMITS, MediaLimits
from llm_core.multimodal.inputs import MODALITIES, MultiModalInput, MultiModalPrompt
from llm_core.multimodal.media import load_audio, load_image, load_video
from llm_core.prompts import MEDIA_PART_TYPES, normalize_messages
from llm_core.tokenizer import Tokenizer


@dataclass(frozen=True)
class _Item:
    modality: str
    data: Any
    content_hash: str
    length: int


class MultiModalProcessor:
    """Turns chat prompts with media into MultiModalPrompts; runs no encoder.

    image_encoder / audio_encoder: encoders.loader's LoadedImageEncoder / LoadedAudioEncoder (or
    None where the model has none): they give the placeholder token ids, the run lengths and the
    content keys. A media part the model cannot take, bad media or a prompt whose text holds a
    placeholder token itself raises ValueError (MediaError for media that does not decode).
    """

    def __init__(self, tokenizer: Tokenizer, image_encoder=None, audio_encoder=None, *,
                 limits: MediaLimits = DEFAULT_MEDIA_LIMITS, video_pool_stride: int = 1) -> None:
        self.tokenizer = tokenizer
        self.image_encoder = image_encoder
        self.audio_encoder = audio_encoder
        self.limits = limits
        # item_id -> (modality, decoded value): set by MediaItemStore, so {"type": "item"} parts resolve
        self.item_resolver = None
        self.video_pool_stride = video_pool_stride
        image_id = image_encoder.image_token_id if image_encoder is not None else None
        audio_id = audio_encoder.audio_token_id if audio_encoder is not None else None
        # The placeholder id of each run, and the marker ids that may stand for a part in the
        # rendered prompt (a template may render a video part as its own <video> token).
        self.placeholder_ids = {"image": image_id, "video": image_id, "audio": audio_id}
        self.marker_ids: dict[str, set[int]] = {}
        if image_id is not None:
            video_id = tokenizer.token_to_id("<video>")
            self.marker_ids.update(image={image_id}, video={image_id} | ({video_id} if video_id is not None else set()))
        if audio_id is not None:
            self.marker_ids["audio"] = {audio_id}
        # None where the tokenizer lacks the placeholder token: such media cannot be placed.
        self.marker_texts = {kind: tokenizer.convert_ids_to_tokens([self.placeholder_ids[kind]])[0]
                             for kind in self.marker_ids}
        self.template_renders = {kind: self.marker_texts[kind] is not None and self._template_renders(kind)
                                 for kind in self.marker_ids}

    @staticmethod
    def has_media(prompt: Any) -> bool:
        """Whether `prompt` is a chat whose content holds a media part."""
        if not isinstance(prompt, dict) or not isinstance(prompt.get("messages"), list):
            return False
        return any(isinstance(part, dict) and part.get("type") in MEDIA_PART_TYPES
                   for message in prompt["messages"] if isinstance(message, dict)
                   and isinstance(message.get("content"), list) for part in message["content"])

    def process(self, messages: Any) -> MultiModalPrompt:
        """Token ids (chat template, generation prompt added) and the placed media items."""
        if not isinstance(messages, list) or not messages:
            raise ValueError("messages must be a non-empty list")
        items: list[_Item] = []
        as_parts, as_text = [], []  # the messages as the template takes them, either way
        for i, message in enumerate(messages):
            content = message.get("content") if isinstance(message, dict) else None
            if not isinstance(content, list):
                as_parts.append(message)
                as_text.append(message)
                continue
            parts, texts = [], []
            for j, part in enumerate(content):
                kind = part.get("type") if isinstance(part, dict) else None
                if kind in MEDIA_PART_TYPES:
                    items.append(self._load(kind, part, f"messages[{i}].content[{j}]"))
                    kind = items[-1].modality  # an uploaded item's own modality
                    parts.append({"type": kind})
                    texts.append({"type": "text", "text": self.marker_texts[kind]})
                else:
                    parts.append(part)
                    texts.append(part)
            as_parts.append({**message, "content": parts})
            as_text.append({**message, "content": texts})
        chat = normalize_messages(as_text)  # validates every message and text part
        if all(self.template_renders[item.modality] for item in items):
            chat = as_parts
        text = self.tokenizer.apply_chat_template(chat, add_generation_prompt=True)
        return self._expand(self.tokenizer.encode(text, add_special_tokens=False), items)

    def video_key(self, frames) -> str:
        """The embedding-cache key of a video: its frames' keys under this encoder and pool stride."""
        encoder, stride = self.image_encoder, self.video_pool_stride
        keys = "\n".join(encoder.content_key(frame, stride) for frame in frames).encode()
        return content_key(keys, shape=(len(frames),), dtype="frame_keys", encoder_id=encoder.identity,
                           settings=f"video,pool_stride={stride}")

    def _load(self, kind: str, part: dict, where: str) -> _Item:
        if kind == "item" and self.item_resolver is not None:
            kind, value = self.item_resolver(part.get("item_id"), where)
            part = {"type": kind, kind: value}
        if kind not in MODALITIES:
            raise ValueError(f"{where} is an {kind!r} part: the offline API takes image, audio and video "
                             "parts with their data")
        if kind not in self.marker_ids:
            raise ValueError(f"{where} is {kind} media, which this model cannot take (it has "
                             f"{'an image' if self.image_encoder is not None else 'an audio'} encoder)")
        if self.marker_texts[kind] is None:
            raise ValueError(f"the tokenizer has no token for the {kind} placeholder id {self.placeholder_ids[kind]}")
        value = part.get(kind)
        if value is None:
            raise ValueError(f"{where}: the {kind} part has no data (no {kind!r} key)")
        if kind == "image":
            image = load_image(value, self.limits, where)
            encoder = self.image_encoder
            return _Item(kind, image, encoder.content_key(image), encoder.config.num_image_tokens)
        if kind == "video":
            frames = load_video(value, self.limits, where)
            return _Item(kind, frames, self.video_key(frames),
                         len(frames) * self.image_encoder.config.num_frame_tokens(self.video_pool_stride))
        samples, rate = load_audio(value, self.limits, where)
        length = self.audio_encoder.num_tokens(len(samples), rate)
        if length < 1:
            raise ValueError(f"{where}: the audio clip ({len(samples)} samples at {rate} Hz) is too short to encode")
        return _Item(kind, (samples, rate), self.audio_encoder.content_key(samples, rate), length)

    def _expand(self, ids: list[int], items: list[_Item]) -> MultiModalPrompt:
        markers = set().union(*self.marker_ids.values())
        found = [token for token in ids if token in markers]
        if len(found) != len(items) or any(token not in self.marker_ids[item.modality]
                                           for token, item in zip(found, items)):
            shown = " or ".join(sorted({text for text in self.marker_texts.values() if text}))
            raise ValueError(f"the rendered prompt holds {len(found)} media placeholder tokens for {len(items)} "
                             f"media parts (text parts must not contain {shown})")
        token_ids: list[int] = []
        inputs: list[MultiModalInput] = []
        pending = iter(items)
        for token in ids:
            if token not in markers:
                token_ids.append(token)
                continue
            item = next(pending)
            inputs.append(MultiModalInput(item.modality, item.content_hash, len(token_ids), item.length, item.data))
            token_ids.extend([self.placeholder_ids[item.modality]] * item.length)
        return MultiModalPrompt(token_ids, tuple(inputs))

    def _template_renders(self, kind: str) -> bool:
        """Whether the chat template renders a bare {"type": kind} part to one marker token."""
        try:
            text = self.tokenizer.apply_chat_template([{"role": "user", "content": [{"type": kind}]}],
                                                      add_generation_prompt=False)
        except ValueError:
            return False
        ids = self.tokenizer.encode(text, add_special_tokens=False)
        return sum(token in self.marker_ids[kind] for token in ids) == 1


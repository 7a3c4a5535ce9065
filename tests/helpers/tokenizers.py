"""Tiny tokenizer directories that tests build themselves (nothing is downloaded).

`make_tokenizer_dir` trains a small BPE on a built-in corpus (English, numbers, JSON, accented
letters, Chinese, emoji) and writes tokenizer.json, tokenizer_config.json and
special_tokens_map.json, so that both `llm_core.tokenizer.Tokenizer.from_dir` and transformers'
`AutoTokenizer.from_pretrained` load it. Two kinds:
- "bytelevel": Qwen2-style byte-level BPE; eos <|im_end|>, pad <|endoftext|>, no bos by default.
- "metaspace": Llama-style sentencepiece BPE ("▁" for spaces, <0x..> byte fallback); bos <s>,
  eos </s>, unk <unk>; a bos is prepended by default.
The vocabulary (added tokens included) never exceeds `vocab_size`.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
UNK, BOS, EOS = "<unk>", "<s>", "</s>"
IMAGE_TOKEN, AUDIO_TOKEN, VIDEO_TOKEN = "<image>", "<audio>", "<video>"
MEDIA_TOKENS = (IMAGE_TOKEN, AUDIO_TOKEN, VIDEO_TOKEN)
# Every special token of each kind, in id order of the added tokens.
SPECIAL_TOKENS = {
    "bytelevel": (ENDOFTEXT, IM_START, IM_END, *MEDIA_TOKENS),
    "metaspace": (UNK, BOS, EOS, IM_START, IM_END, *MEDIA_TOKENS),
}
KINDS = tuple(SPECIAL_TOKENS)

# ChatML; content is a string or a list of parts, media parts become their placeholder token.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}"
    "{% for part in message['content'] %}{% if part['type'] == 'text' %}{{ part['text'] }}"
    "{% elif part['type'] in ['image', 'audio', 'video'] %}<{{ part['type'] }}>{% endif %}{% endfor %}"
    "{% endif %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_SENTENCES = [
    "The quick brown fox jumps over the lazy dog.", "Hello, world! How are you today?",
    "A red circle sits left of a blue square.", "Streaming tokens over one WebSocket, step by step.",
    "It's 12:45 and the price is $3,199.99 (about 42% off).", "Call 555-0199 or 1-800-123-4567 before 2024-06-01.",
    '{"name": "Ada", "age": 36, "tags": ["math", "code"], "ok": true, "ratio": 0.75, "none": null}',
    '[{"id": 1, "x": -3.5e2}, {"id": 2, "x": 1e-3}]', "if (a < b && c >= d) { return a[i] + b[j]; }",
    "Café, naïve, résumé, Zürich, señor, façade, Ångström, über, crème brûlée.",
    "你好，世界！今天天气很好。我们一起学习中文。", "模型输出流式文本，每一步一个词。",
    "Emoji: 👋 🌍 🎉 😀 🚀 ❤️ 👩‍💻 🇫🇷 done.", "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000 3.14159 2.71828",
    "Tabs\tand\nnewlines\n\nand   multiple   spaces.", "Mixed: The 猫 sat on the mat 🐱, très bien!",
]


def _bytelevel(num_pieces: int) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=num_pieces, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_SENTENCES * 4, trainer)
    return tok


def _metaspace(num_pieces: int) -> Tokenizer:
    # Train on "▁"-split words, then rebuild the model with <unk> <s> </s> and the 256 byte
    # tokens first (as sentencepiece conversions do) and a non-splitting pre-tokenizer.
    # Characters outside the 80 most frequent are left out, so that they need byte fallback
    # (the trainer's own limit_alphabet breaks ties at random).
    counts = Counter(ch for sentence in _SENTENCES for ch in sentence if ch != " ")
    alphabet = set(sorted(counts, key=lambda ch: (-counts[ch], ch))[:80])
    corpus = ["".join(ch if ch in alphabet else " " for ch in sentence) for sentence in _SENTENCES]
    trained = Tokenizer(models.BPE())
    trained.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first", split=True)
    trained.train_from_iterator(corpus * 4, trainers.BpeTrainer(vocab_size=num_pieces, min_frequency=2,
                                                                show_progress=False))
    model = json.loads(trained.to_str())["model"]
    vocab = {UNK: 0, BOS: 1, EOS: 2, **{f"<0x{b:02X}>": 3 + b for b in range(256)}}
    for piece, _ in sorted(model["vocab"].items(), key=lambda item: item[1]):
        vocab.setdefault(piece, len(vocab))
    merges = [tuple(pair) for pair in model["merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=UNK, fuse_unk=True, byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    return tok


def make_tokenizer_dir(path: str | Path, kind: str = "bytelevel", vocab_size: int = 512,
                       chat_template: str | None = CHAT_TEMPLATE, add_bos: bool | None = None) -> Path:
    """Write a trained tokenizer of `kind` into `path` (created if missing); returns the path.

    add_bos (default: True for "metaspace", False for "bytelevel") makes encode() prepend the bos
    token (<s>, or <|endoftext|> for "bytelevel"); chat_template=None writes no template.
    """
    if kind not in SPECIAL_TOKENS:
        raise ValueError(f"kind must be one of {KINDS}, not {kind!r}")
    specials = SPECIAL_TOKENS[kind]
    # The trainer's budget: what is left after the added tokens (and, for metaspace, the
    # <unk> <s> </s> and byte tokens); byte-level training counts its 256-byte alphabet itself.
    num_fixed = 3 + 256 if kind == "metaspace" else 0
    num_pieces = vocab_size - num_fixed - (len(specials) - (3 if kind == "metaspace" else 0))
    if num_pieces < (128 if kind == "metaspace" else 320):
        raise ValueError(f"vocab_size={vocab_size} is too small for a {kind} tokenizer")
    tok = _metaspace(num_pieces) if kind == "metaspace" else _bytelevel(num_pieces)
    tok.add_special_tokens(list(specials))
    assert tok.get_vocab_size(with_added_tokens=True) <= vocab_size

    if add_bos is None:
        add_bos = kind == "metaspace"
    roles = ({"bos_token": BOS, "eos_token": EOS, "unk_token": UNK, "pad_token": None} if kind == "metaspace"
             else {"bos_token": ENDOFTEXT if add_bos else None, "eos_token": IM_END, "unk_token": None,
                   "pad_token": ENDOFTEXT})
    if add_bos:
        bos = roles["bos_token"]
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos} $B",
                                                           special_tokens=[(bos, tok.token_to_id(bos))])
    elif kind == "bytelevel":
        tok.post_processor = processors.ByteLevel(trim_offsets=False)

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok.save(str(path / "tokenizer.json"))
    extra = [t for t in specials if t not in roles.values()]
    config = {"tokenizer_class": "PreTrainedTokenizerFast", **roles, "additional_special_tokens": extra,
              "add_bos_token": add_bos, "add_eos_token": False, "model_max_length": 4096,
              "clean_up_tokenization_spaces": False}
    if chat_template is not None:
        config["chat_template"] = chat_template
    (path / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False))
    special_map = {k: v for k, v in roles.items() if v is not None}
    (path / "special_tokens_map.json").write_text(json.dumps({**special_map, "additional_special_tokens": extra},
                                                             indent=2))
    return path

import json

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from .corpus import CASES
from .helpers import dumps_forms

SPECIAL_TOKENS = ["<eos>", "<pad>", "<|tool|>"]


@pytest.fixture(scope="session")
def byte_level_tokenizer() -> Tokenizer:
    """A tiny byte-level BPE (all 256 bytes + merges learned from the corpus's JSON texts)."""
    texts = []
    for case in CASES:
        for value in case["valid"]:
            texts.extend(dumps_forms(value))
    texts.append(json.dumps({"name": "Ada Lovelace", "email": "ada@example.com", "items": [1, 2, 3]}))
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(texts * 3, trainer)
    return tokenizer


@pytest.fixture(scope="session")
def metaspace_tokenizer() -> Tokenizer:
    """SentencePiece style: '▁' for spaces, <0xNN> byte fallback for everything else."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"<0x{b:02X}>": 3 + b for b in range(256)})
    for piece in ["▁", "h", "e", "l", "o", "w", "r", "d", "▁h", "ll", "é", "t", "a", "b", "s", "p", "c", "n",
                  "{", "}", '"', ":", ",", "[", "]", "1", "2", ".", "5", "A", "m"]:
        vocab.setdefault(piece, len(vocab))
    model = models.BPE(vocab=vocab, merges=[("▁", "h"), ("l", "l")], byte_fallback=True, unk_token="<unk>")
    tokenizer = Tokenizer(model)
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
    tokenizer.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(),
                                           decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    tokenizer.add_special_tokens(["<unk>", "<s>", "</s>"])
    return tokenizer

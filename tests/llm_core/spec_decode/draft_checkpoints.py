"""Target/draft checkpoint pairs that share a tokenizer, built with transformers in the tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from tests.helpers.checkpoints import make_text_checkpoint

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def copy_tokenizer(source: Path, dest: Path) -> None:
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            shutil.copy(source / name, dest / name)


def noisy_copy(target: Path, dest: Path, *, noise: float, seed: int = 1) -> Path:
    """The target's weights plus Gaussian noise of `noise` times each tensor's std (norms kept):
    a draft of the same shape that agrees with the target often but not always."""
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if "norm" not in name:
                weight.add_(torch.randn(weight.shape, generator=gen) * weight.std() * noise)
    model.save_pretrained(dest)
    copy_tokenizer(target, dest)
    return dest


def small_draft(target: Path, dest: Path, *, seed: int = 5, vocab_size: int = 512, arch: str = "qwen2") -> Path:
    """An independent random model of another architecture and shape (1 layer, 1 KV head of 16)
    with the target's tokenizer; vocab_size may differ from the target's (embedding rows)."""
    make_text_checkpoint(dest, arch, seed=seed, vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1)
    copy_tokenizer(target, dest)
    return dest


def word_level_pair(root: Path, vocab_size: int = 8, *, init: float = 0.6) -> tuple[Path, Path]:
    """A target and a draft (independent random Llamas, 2 and 1 layers) over a word-level vocabulary
    of `vocab_size` tokens t0..t{V-1} (t1 is EOS). A large init range makes their next-token
    distributions far from uniform and far from each other."""
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    paths = []
    for name, layers, seed in (("target", 2, 11), ("draft", 1, 12)):
        path = root / name
        path.mkdir(parents=True, exist_ok=True)
        tok = Tokenizer(models.WordLevel({f"t{i}": i for i in range(vocab_size)}, unk_token="t0"))
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        tok.save(str(path / "tokenizer.json"))
        (path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast",
                                                                "eos_token": "t1"}))
        config = transformers.LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=64,
                                          num_hidden_layers=layers, num_attention_heads=2, num_key_value_heads=1,
                                          max_position_embeddings=64, initializer_range=init, bos_token_id=None,
                                          eos_token_id=1)
        config.architectures = ["LlamaForCausalLM"]
        torch.manual_seed(seed)
        transformers.AutoModelForCausalLM.from_config(config).save_pretrained(path)
        paths.append(path)
    return paths[0], paths[1]

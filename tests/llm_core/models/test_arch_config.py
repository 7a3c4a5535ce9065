"""ArchConfig from the config.json of multimodal checkpoints: the decoder is their text model."""

from __future__ import annotations

import pytest

from llm_core.models.arch_config import ArchConfig


@pytest.mark.parametrize(("top", "model_type", "architecture", "hf_class"), [
    ("LlavaForConditionalGeneration", "llama", "LlamaForCausalLM", "LlamaConfig"),
    ("Qwen2AudioForConditionalGeneration", "qwen2", "Qwen2ForCausalLM", "Qwen2Config"),
])
def test_a_sparse_text_config_falls_back_to_the_transformers_defaults(top, model_type, architecture, hf_class):
    import transformers

    # llava-1.5 style: transformers wrote only what differs from its defaults.
    arch = ArchConfig.from_dict({"architectures": [top], "dtype": "float16",
                                 "text_config": {"model_type": model_type, "vocab_size": 32064}})
    hf = getattr(transformers, hf_class)()
    assert arch.architecture == architecture
    assert arch.vocab_size == 32064
    assert (arch.hidden_size, arch.intermediate_size, arch.num_layers, arch.num_heads, arch.num_kv_heads,
            arch.max_position_embeddings, arch.rms_norm_eps) == (
        hf.hidden_size, hf.intermediate_size, hf.num_hidden_layers, hf.num_attention_heads,
        hf.num_key_value_heads, hf.max_position_embeddings, hf.rms_norm_eps)
    assert arch.sliding_window is None
    assert arch.attention_bias == (model_type == "qwen2")
    assert arch.torch_dtype == "float16"  # the checkpoint's dtype, from the top level


def test_an_unknown_text_model_is_an_error_naming_the_architecture():
    with pytest.raises(ValueError, match="unsupported architecture 'FooForConditionalGeneration'"):
        ArchConfig.from_dict({"architectures": ["FooForConditionalGeneration"],
                              "text_config": {"model_type": "gpt2"}})

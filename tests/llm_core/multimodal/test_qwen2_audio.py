"""Qwen2-Audio through the offline API against transformers, fp32."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from encoders.config import DEFAULT_MEDIA_LIMITS
from encoders.media import decode_audio
from encoders.preprocess import resample_audio
from llm_core import SamplingParams
from tests.encoders.media.samples import make_wav
from tests.helpers.mm_checkpoints import load_hf_model, make_qwen2_audio_checkpoint
from tests.helpers.mm_generation import NUM_LOGPROBS, hf_greedy, hf_prompt_ids, make_mm_llm, max_logprob_diff

NUM_NEW = 8
GREEDY = SamplingParams(max_tokens=NUM_NEW, temperature=0.0, ignore_eos=True, logprobs=NUM_LOGPROBS)


def random_clip(num_samples: int, seed: int) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(num_samples)).astype(np.float32)


@pytest.fixture(scope="module")
def qwen2_audio(tmp_path_factory):
    path = make_qwen2_audio_checkpoint(tmp_path_factory.mktemp("qwen2_audio"), seed=6)
    return path, load_hf_model(path), make_mm_llm(path)


def hf_features(path, clips: list[np.ndarray]) -> dict[str, torch.Tensor]:
    import transformers

    extractor = transformers.WhisperFeatureExtractor.from_pretrained(path)
    features = extractor(clips, sampling_rate=16000, return_attention_mask=True, padding="max_length",
                         return_tensors="pt")
    return {"input_features": features["input_features"], "feature_attention_mask": features["attention_mask"]}


def test_logits_and_greedy_tokens_match_transformers(qwen2_audio):
    path, hf, llm = qwen2_audio
    # A clip as an array at 16 kHz, and one as a WAV file at 8 kHz that the engine resamples.
    first, second = random_clip(7000, 1), random_clip(4000, 2)
    wav = make_wav(second[:, None], 8000)
    messages = [{"role": "system", "content": "You listen."}, {"role": "user", "content": [
        {"type": "audio", "audio": (first, 16000)}, {"type": "text", "text": "and"},
        {"type": "audio", "audio": wav}, {"type": "text", "text": "Which is louder?"}]}]
    decoded, rate = decode_audio(wav, None, DEFAULT_MEDIA_LIMITS)
    assert rate == 8000
    clips = [first, resample_audio(decoded, 8000, 16000)]
    encoder = llm.engine.multimodal.processor.audio_encoder
    lengths = [encoder.num_tokens(7000, 16000), encoder.num_tokens(len(decoded), 8000)]
    assert lengths == [11, 12]
    audio_id = hf.config.audio_token_index
    expected_ids = hf_prompt_ids(path, messages, lengths, audio_id)
    want_tokens, want_logprobs = hf_greedy(hf, expected_ids, NUM_NEW, **hf_features(path, clips))

    for options in ({}, {"max_num_batched_tokens": 5, "enable_prefix_caching": False}):
        engine = llm if not options else make_mm_llm(path, **options)  # chunks of 5 cut each audio run
        out = engine.generate({"messages": messages}, GREEDY)[0]
        assert out.prompt_token_ids == expected_ids
        assert out.prompt_token_ids.count(audio_id) == sum(lengths)
        assert out.token_ids == want_tokens
        assert max_logprob_diff(out.logprobs, want_logprobs) < 1e-4


def test_a_clip_too_short_to_encode_is_an_error(qwen2_audio):
    _, _, llm = qwen2_audio
    messages = [{"role": "user", "content": [{"type": "audio", "audio": (np.zeros(100, np.float32), 16000)}]}]
    with pytest.raises(ValueError, match="too short to encode"):
        llm.generate({"messages": messages})
    with pytest.raises(ValueError, match="is image media, which this model cannot take"):
        llm.generate({"messages": [{"role": "user", "content": [{"type": "image", "image": b"\x89PNG"}]}]})

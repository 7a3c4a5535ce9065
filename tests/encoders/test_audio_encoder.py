"""The Qwen2-Audio encoder (Whisper encoder, pooling, projector) against transformers, and its loader."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from encoders.loader import load_audio_encoder, load_encoders
from encoders.preprocess import resample_audio
from tests.helpers.mm_checkpoints import FALLBACK_TOKEN_IDS, load_hf_model, make_qwen2_audio_checkpoint

AUDIO_ID = FALLBACK_TOKEN_IDS["<audio>"]
# The tiny encoder takes 1 s chunks (100 mel frames); 23456 samples are cut to 16000.
CLIP_LENGTHS = (5000, 16000, 23456, 1800)


def random_clip(num_samples: int, seed: int) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(num_samples)).astype(np.float32)


@pytest.fixture(scope="module")
def qwen2_audio(tmp_path_factory):
    path = make_qwen2_audio_checkpoint(tmp_path_factory.mktemp("qwen2_audio"), tokenizer=False, seed=2)
    return path, load_hf_model(path), load_audio_encoder(path)


def hf_audio_rows(path, hf, clips: list[np.ndarray]) -> list[torch.Tensor]:
    """The rows that transformers' Qwen2-Audio forward puts at each clip's placeholders, taken
    from the embeddings its language model receives."""
    import transformers

    extractor = transformers.WhisperFeatureExtractor.from_pretrained(path)
    features = extractor(clips, sampling_rate=16000, return_attention_mask=True, padding="max_length",
                         return_tensors="pt")
    lengths = features["attention_mask"].sum(-1).tolist()
    counts = [(((n - 1) // 2 + 1) - 2) // 2 + 1 for n in lengths]  # Qwen2AudioProcessor's count
    input_ids, starts = [1, 2], []
    for count in counts:
        starts.append(len(input_ids))
        input_ids += [AUDIO_ID] * count + [3, 4]
    captured = {}
    hook = hf.model.language_model.register_forward_pre_hook(
        lambda module, args, kwargs: captured.update(embeds=kwargs["inputs_embeds"]), with_kwargs=True)
    try:
        with torch.no_grad():
            hf(input_ids=torch.tensor([input_ids]), input_features=features["input_features"],
               feature_attention_mask=features["attention_mask"], attention_mask=torch.ones(1, len(input_ids)))
    finally:
        hook.remove()
    return [captured["embeds"][0, start:start + count] for start, count in zip(starts, counts, strict=True)]


def test_audio_embeddings_equal_transformers(qwen2_audio):
    path, hf, encoder = qwen2_audio
    clips = [random_clip(n, seed) for seed, n in enumerate(CLIP_LENGTHS)]
    expected = hf_audio_rows(path, hf, clips)
    ours = encoder.encode([(clip, 16000) for clip in clips])
    assert [len(rows) for rows in ours] == [len(rows) for rows in expected] == [8, 25, 25, 3]
    for mine, theirs in zip(ours, expected, strict=True):
        assert (mine - theirs).abs().max().item() < 1e-4


def test_resampled_clips_equal_transformers_on_the_resampled_audio(qwen2_audio):
    path, hf, encoder = qwen2_audio
    clips = [(random_clip(3000, 7), 8000), (random_clip(10000, 8), 44100)]
    expected = hf_audio_rows(path, hf, [resample_audio(samples, rate, 16000) for samples, rate in clips])
    for mine, theirs, (samples, rate) in zip(encoder.encode(clips), expected, clips, strict=True):
        assert len(mine) == len(theirs) == encoder.num_tokens(len(samples), rate)
        assert (mine - theirs).abs().max().item() < 1e-4


def test_clips_of_a_batch_do_not_mix(qwen2_audio):
    _, _, encoder = qwen2_audio
    clips = [(random_clip(n, 10 + n), 16000) for n in (3000, 16000)]
    batch = encoder.encode(clips)
    alone = encoder.encode(clips[:1])
    assert (batch[0] - alone[0]).abs().max().item() < 1e-5


@pytest.mark.parametrize("num_samples, rate", [(16000, 16000), (40000, 16000), (5000, 16000), (7777, 22050),
                                               (48000, 48000), (321, 16000)])
def test_placeholder_count_matches_the_encoder(qwen2_audio, num_samples, rate):
    _, _, encoder = qwen2_audio
    count = encoder.num_tokens(num_samples, rate)
    assert count > 0
    assert len(encoder.encode([(random_clip(num_samples, 0), rate)])[0]) == count


def test_a_clip_too_short_for_a_token_is_an_error(qwen2_audio):
    _, _, encoder = qwen2_audio
    assert encoder.num_tokens(320, 16000) == 0
    with pytest.raises(ValueError, match="at least one token"):
        encoder.encode([(random_clip(320, 0), 16000)])


def test_loader_reports_the_audio_placeholder(qwen2_audio):
    path, _, encoder = qwen2_audio
    image, audio = load_encoders(path)
    assert image is None and audio.audio_token_id == AUDIO_ID == encoder.audio_token_id
    assert encoder.content_key(random_clip(100, 0), 16000) != encoder.content_key(random_clip(100, 0), 8000)


def test_loader_accepts_the_model_prefix(tmp_path, qwen2_audio):
    path, _, encoder = qwen2_audio
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    for name in ("config.json", "preprocessor_config.json"):
        (renamed / name).write_text((path / name).read_text())
    tensors = load_file(str(path / "model.safetensors"))
    save_file({"model." + name: tensor for name, tensor in tensors.items()}, str(renamed / "model.safetensors"))
    clips = [(random_clip(7000, 1), 16000)]
    assert torch.equal(load_audio_encoder(renamed).encode(clips)[0], encoder.encode(clips)[0])


def test_missing_positions_fall_back_to_whisper_sinusoids(tmp_path):
    from transformers.models.whisper.modeling_whisper import sinusoids

    path = make_qwen2_audio_checkpoint(tmp_path, tokenizer=False)
    tensors = load_file(str(path / "model.safetensors"))
    del tensors["audio_tower.embed_positions.weight"]
    save_file(tensors, str(path / "model.safetensors"))
    positions = load_audio_encoder(path).model.audio_tower.embed_positions.weight
    assert positions.shape == (50, 32)
    assert (positions - sinusoids(50, 32)).abs().max().item() < 1e-6


def test_loader_rejects_an_extractor_that_does_not_fill_the_encoder(tmp_path):
    path = make_qwen2_audio_checkpoint(tmp_path, tokenizer=False)
    settings = json.loads((path / "preprocessor_config.json").read_text())
    settings["chunk_length"] = 2
    (path / "preprocessor_config.json").write_text(json.dumps(settings))
    with pytest.raises(ValueError, match="80 x 200 features but the encoder takes 80 x 100"):
        load_audio_encoder(path)

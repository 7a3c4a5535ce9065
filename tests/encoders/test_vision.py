"""The LLaVA image encoder (CLIP / SigLIP tower + projector) against transformers, and its loader."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from cache.embedding_cache import EmbeddingCache
from encoders.loader import load_encoders, load_image_encoder
from tests.helpers.mm_checkpoints import FALLBACK_TOKEN_IDS, load_hf_model, make_llava_checkpoint

# (tower, vision_feature_layer, vision_feature_select_strategy, image tokens of a 4x4 patch grid)
VARIANTS = [
    ("clip", -2, "default", 16),
    ("clip", [0, -1], "full", 17),
    ("siglip", -1, "full", 16),
    ("siglip", [-3, 1], "default", 15),
]
IMAGE_SIZES = [(37, 53), (61, 29), (32, 32), (90, 91)]


def random_images(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in IMAGE_SIZES]


@pytest.fixture(scope="module", params=VARIANTS, ids=lambda v: f"{v[0]}-{v[1]}-{v[2]}")
def llava(request, tmp_path_factory):
    vision, layer, strategy, num_tokens = request.param
    path = make_llava_checkpoint(tmp_path_factory.mktemp(vision), vision, tokenizer=False, seed=3,
                                 vision_feature_layer=layer, vision_feature_select_strategy=strategy)
    return path, load_hf_model(path), load_image_encoder(path), num_tokens


def hf_pixels(path, images):
    import transformers

    processor = transformers.AutoImageProcessor.from_pretrained(path, backend="pil")
    return processor(images, return_tensors="pt", input_data_format="channels_last")["pixel_values"]


def test_image_embeddings_equal_transformers(llava):
    path, hf, encoder, num_tokens = llava
    images = random_images(0)
    pixels = hf_pixels(path, images)
    with torch.no_grad():
        expected = torch.stack(list(hf.get_image_features(pixel_values=pixels).pooler_output))
    ours = encoder.encode(images)
    assert ours.shape == (len(images), num_tokens, 64) == expected.shape
    assert encoder.config.num_image_tokens == num_tokens
    assert (ours - expected).abs().max().item() < 1e-4


def test_images_of_a_batch_do_not_mix(llava):
    _, _, encoder, _ = llava
    images = random_images(1)
    batch = encoder.encode(images)
    alone = encoder.encode(images[2:3])
    assert (batch[2] - alone[0]).abs().max().item() < 1e-5


def test_pooled_frames_equal_a_reference_pooling(tmp_path):
    # LLaVA-NeXT-Video pools the selected features 2x2 before the projector.
    path = make_llava_checkpoint(tmp_path, "clip", tokenizer=False, seed=4)
    hf, encoder = load_hf_model(path), load_image_encoder(path)
    frames = random_images(2)
    pixels = hf_pixels(path, frames)
    with torch.no_grad():
        states = hf.model.vision_tower(pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
        grid = states.view(len(frames), 4, 4, -1).permute(0, 3, 1, 2)
        pooled = torch.nn.AvgPool2d(2, 2)(grid).flatten(2).transpose(1, 2)
        expected = hf.model.multi_modal_projector(pooled)
    ours = encoder.encode(frames, pool_stride=2)
    assert ours.shape == (len(frames), encoder.config.num_frame_tokens(2), 64) == (len(frames), 4, 64)
    assert (ours - expected).abs().max().item() < 1e-4


def test_pooling_needs_a_square_grid(llava):
    _, _, encoder, num_tokens = llava
    if num_tokens == 16:
        assert encoder.config.num_frame_tokens(2) == 4
    else:
        with pytest.raises(ValueError, match="square grid"):
            encoder.config.num_frame_tokens(2)


def test_loader_reports_placeholders_and_skips_the_text_model(llava):
    path, _, encoder, num_tokens = llava
    image, audio = load_encoders(path)
    assert audio is None and image.image_token_id == FALLBACK_TOKEN_IDS["<image>"]
    assert image.config.num_image_tokens == num_tokens
    names = {name for name, _ in image.model.named_parameters()}
    assert not any("language_model" in name or "post_layernorm" in name or "head." in name for name in names)


def test_placeholder_id_comes_from_the_tokenizer(tmp_path):
    pytest.importorskip("tests.helpers.tokenizers")
    from tokenizers import Tokenizer

    path = make_llava_checkpoint(tmp_path, "siglip")
    image_id = Tokenizer.from_file(str(path / "tokenizer.json")).token_to_id("<image>")
    assert image_id is not None and load_image_encoder(path).image_token_id == image_id


@pytest.mark.parametrize("prefix", ["model.vision_tower.vision_model.", "vision_tower.vision_model."])
def test_loader_accepts_other_checkpoint_prefixes(tmp_path, prefix):
    path = make_llava_checkpoint(tmp_path / "orig", "clip", tokenizer=False, seed=5)
    renamed = tmp_path / "renamed"
    renamed.mkdir()
    for name in ("config.json", "preprocessor_config.json"):
        (renamed / name).write_text((path / name).read_text())
    tensors = load_file(str(path / "model.safetensors"))
    moved = {}
    for name, tensor in tensors.items():
        name = name.replace("vision_tower.", prefix) if name.startswith("vision_tower.") else "model." + name
        moved[name] = tensor
    save_file(moved, str(renamed / "model.safetensors"))
    images = random_images(3)
    assert torch.equal(load_image_encoder(renamed).encode(images), load_image_encoder(path).encode(images))


def test_loader_names_a_missing_tensor(tmp_path):
    path = make_llava_checkpoint(tmp_path, "clip", tokenizer=False)
    tensors = load_file(str(path / "model.safetensors"))
    del tensors["multi_modal_projector.linear_2.bias"]
    save_file(tensors, str(path / "model.safetensors"))
    with pytest.raises(KeyError, match="multi_modal_projector.linear_2.bias"):
        load_image_encoder(path)


def test_loader_rejects_a_processor_of_another_size(tmp_path):
    path = make_llava_checkpoint(tmp_path, "siglip", tokenizer=False)
    settings = json.loads((path / "preprocessor_config.json").read_text())
    settings["size"] = {"height": 48, "width": 48}
    (path / "preprocessor_config.json").write_text(json.dumps(settings))
    with pytest.raises(ValueError, match="48"):
        load_image_encoder(path)


def test_second_identical_image_hits_the_embedding_cache(llava):
    _, _, encoder, _ = llava
    cache = EmbeddingCache(capacity_bytes=1 << 20)
    first, other = random_images(4)[:2]
    forwards = 0
    for image in (first, first.copy(), other):
        key = encoder.content_key(image)
        if cache.get(key) is None:
            forwards += 1
            cache.put(key, encoder.encode([image])[0])
    assert forwards == 2 and (cache.num_hits, cache.num_misses) == (1, 2)
    assert encoder.content_key(first) != encoder.content_key(first, pool_stride=2)

"""LLaVA (CLIP and SigLIP towers) through the offline API against transformers, fp32."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from llm_core import SamplingParams
from llm_core.scheduler_output import ScheduledRequest, SchedulerOutput
from tests.helpers.mm_checkpoints import load_hf_model, make_llava_checkpoint
from tests.helpers.mm_generation import NUM_LOGPROBS, hf_greedy, hf_prompt_ids, make_mm_llm, max_logprob_diff

NUM_NEW = 8
GREEDY = SamplingParams(max_tokens=NUM_NEW, temperature=0.0, ignore_eos=True, logprobs=NUM_LOGPROBS)


def random_image(seed: int, size: tuple[int, int]) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module", params=["clip", "siglip"])
def llava(request, tmp_path_factory):
    path = make_llava_checkpoint(tmp_path_factory.mktemp(request.param), request.param, seed=5)
    return path, load_hf_model(path), make_mm_llm(path)


def two_image_chat(first, second) -> list[dict]:
    return [{"role": "user", "content": [
        {"type": "text", "text": "Compare "}, {"type": "image", "image": first},
        {"type": "text", "text": " with "}, {"type": "image", "image": second},
        {"type": "text", "text": ". What changed?"}]}]


def hf_pixels(path, images):
    import transformers

    processor = transformers.AutoImageProcessor.from_pretrained(path, backend="pil")
    return processor(images, return_tensors="pt", input_data_format="channels_last")["pixel_values"]


def test_logits_and_greedy_tokens_match_transformers(llava):
    path, hf, llm = llava
    images = [random_image(1, (37, 53)), random_image(2, (61, 29))]
    # One image as an array, one as a PIL image: both decode to the same pixels.
    messages = two_image_chat(images[0], Image.fromarray(images[1]))
    # A 4x4 patch grid; the "default" strategy drops CLIP's class token, or SigLIP's first patch.
    tower = hf.config.vision_config.model_type.removesuffix("_vision_model")
    image_id, num_tokens = hf.config.image_token_index, {"clip": 16, "siglip": 15}[tower]
    assert llm.engine.multimodal.processor.image_encoder.config.num_image_tokens == num_tokens
    expected_ids = hf_prompt_ids(path, messages, [num_tokens] * 2, image_id)
    want_tokens, want_logprobs = hf_greedy(hf, expected_ids, NUM_NEW, pixel_values=hf_pixels(path, images))

    for options in ({}, {"max_num_batched_tokens": 7, "enable_prefix_caching": False}):
        engine = llm if not options else make_mm_llm(path, **options)  # chunks of 7 cut each image run
        out = engine.generate({"messages": messages}, GREEDY)[0]
        assert out.prompt_token_ids == expected_ids
        assert out.prompt_token_ids.count(image_id) == 2 * num_tokens
        assert out.token_ids == want_tokens
        assert all(len(row) >= NUM_LOGPROBS for row in out.logprobs)
        assert max_logprob_diff(out.logprobs, want_logprobs) < 1e-4


def test_text_only_prompts_take_the_fast_path_and_match_transformers(llava):
    path, hf, llm = llava
    messages = [{"role": "user", "content": "Describe nothing."}]
    ids = hf_prompt_ids(path, messages, [], hf.config.image_token_index)
    want_tokens, want_logprobs = hf_greedy(hf, ids, NUM_NEW)
    out = llm.generate({"messages": messages}, GREEDY)[0]
    assert out.token_ids == want_tokens and max_logprob_diff(out.logprobs, want_logprobs) < 1e-4
    engine, runner = llm.engine, llm.engine.runner
    entry = ScheduledRequest("text", tuple(ids), 0, (0, 1, 2), True, 0, GREEDY)
    assert runner.prepare_inputs_embeds(SchedulerOutput((entry,), len(ids)), torch.tensor(ids)) is None
    # A media request's decode steps take the fast path too; its prefill does not.
    request_id = engine.add_request({"messages": two_image_chat(random_image(5, (9, 9)), random_image(6, (9, 9)))},
                                    GREEDY)
    engine.step()
    request = engine.get_request(request_id)
    prompt, blocks = tuple(request.prompt_token_ids), tuple(engine.kv_cache_manager.get_block_ids(request_id))
    decode = ScheduledRequest(request_id, (7,), len(prompt), blocks, True, 1, GREEDY)
    assert runner.prepare_inputs_embeds(SchedulerOutput((decode,), 1), torch.tensor([7])) is None
    chunk = prompt[:request.media_spans[0].offset + 3]  # three rows of the first image
    prefill = ScheduledRequest(request_id, chunk, 0, blocks, False, 0, GREEDY)
    embeds = runner.prepare_inputs_embeds(SchedulerOutput((prefill,), len(chunk)), torch.tensor(chunk))
    assert embeds.shape == (len(chunk), 64)
    engine.abort_request([request_id])


def test_transformers_5_weight_names_load(tmp_path, llava):
    # Checkpoints written by transformers 5 keep the decoder under model.language_model. and the
    # tower and projector under model.; the engine must read those names as well.
    path, hf, llm = llava
    renamed = {}
    for name, tensor in load_file(str(path / "model.safetensors")).items():
        name = name.replace("language_model.model.", "model.language_model.").replace("language_model.lm_head.",
                                                                                       "lm_head.")
        renamed[name if name.startswith(("model.", "lm_head.")) else "model." + name] = tensor
    assert "model.vision_tower.encoder.layers.0.mlp.fc1.weight" in renamed
    for item in path.iterdir():
        if item.name != "model.safetensors":
            (tmp_path / item.name).write_bytes(item.read_bytes())
    save_file(renamed, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    messages = two_image_chat(png(random_image(3, (40, 40))), png(random_image(4, (50, 30))))
    expected = llm.generate({"messages": messages}, GREEDY)[0]
    got = make_mm_llm(tmp_path).generate({"messages": messages}, GREEDY)[0]
    assert got.token_ids == expected.token_ids
    assert all(abs(got.logprobs[i][t] - v) < 1e-5 for i, row in enumerate(expected.logprobs) for t, v in row.items())


def test_media_errors_name_the_part(llava):
    _, _, llm = llava
    audio = {"role": "user", "content": [{"type": "audio", "audio": (np.zeros(16000, np.float32), 16000)}]}
    with pytest.raises(ValueError, match=r"messages\[0\]\.content\[0\] is audio media"):
        llm.generate({"messages": [audio]})
    literal = {"role": "user", "content": [{"type": "image", "image": random_image(0, (8, 8))},
                                           {"type": "text", "text": "what is <image>?"}]}
    with pytest.raises(ValueError, match="2 media placeholder tokens for 1 media parts"):
        llm.generate({"messages": [literal]})
    empty = {"role": "user", "content": [{"type": "image"}]}
    with pytest.raises(ValueError, match=r"messages\[0\]\.content\[0\]: the image part has no data"):
        llm.generate({"messages": [empty]})
    assert not llm.engine.has_unfinished_requests()


def test_corrupt_and_oversized_media_leave_other_requests_running(llava):
    from encoders.media import MediaError

    _, _, llm = llava
    engine = llm.engine
    good = {"messages": [{"role": "user", "content": [{"type": "image", "image": png(random_image(3, (20, 24)))},
                                                       {"type": "text", "text": "what?"}]}]}
    alone = llm.generate(good, GREEDY)[0]
    running = engine.add_request(good, GREEDY)
    first = engine.step()  # the good request is under way
    corrupt = {"messages": [{"role": "user", "content": [{"type": "image", "image": png(random_image(4, (8, 8)))[:40]}]}]}
    with pytest.raises(MediaError) as excinfo:
        engine.add_request(corrupt, GREEDY)
    assert excinfo.value.code == "corrupt_media" and "messages[0].content[0]" in str(excinfo.value)
    huge = np.zeros((5000, 5000, 3), np.uint8)  # 25 M pixels
    strict = engine.multimodal.processor.limits
    if huge.shape[0] * huge.shape[1] > strict.max_image_pixels:
        with pytest.raises(MediaError, match="pixels"):
            engine.add_request({"messages": [{"role": "user", "content": [{"type": "image", "image": huge}]}]}, GREEDY)
    text, tokens = "".join(d.text_delta for d in first), [t for d in first for t in d.new_token_ids]
    for _ in range(200):
        for delta in engine.step():
            assert delta.request_id == running
            text += delta.text_delta
            tokens += delta.new_token_ids
        if not engine.has_unfinished_requests():
            break
    assert tokens == alone.token_ids and text == alone.text

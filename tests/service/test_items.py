"""A session's media items without a server: chunked uploads decode in the pool (never on the loop)
to what the whole-file decoders give, the content-hash shortcut, deletion, and failures."""

from __future__ import annotations

import asyncio
import hashlib
import io
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

from encoders.config import DEFAULT_MEDIA_LIMITS
from encoders.encoder_config import AudioPreprocessConfig, audio_encoder_config, image_encoder_config
from encoders.media import decode_audio, decode_video
from protocol import InputAppend, ProtocolError
from service.config import ServiceConfig
from service.items import SessionItems
from service.media_cache import MediaCache
from service.media_tokens import ModelMedia
from tests.encoders.media.samples import make_video, make_wav, to_bytes, tone
from tests.service.wire import run

MEDIA = ModelMedia(image=image_encoder_config({"model_type": "llava"}),
                   audio=audio_encoder_config({"model_type": "qwen2_audio"}), audio_preprocess=AudioPreprocessConfig())
PNG = to_bytes(Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3)), "PNG")


def chunks(item_id, data, modality, mime, size=1000, content_hash=None):
    parts = [data[i:i + size] for i in range(0, len(data), size)]
    return [InputAppend(item_id, modality, mime, part, i == len(parts) - 1,
                        content_hash if i == 0 else None) for i, part in enumerate(parts)]


async def upload(items: SessionItems, events: list, appends) -> None:
    for event in appends:
        items.append(event)
    item_id = appends[0].item_id
    for _ in range(2000):  # bounded wait for the commit or error event
        if any(getattr(e, "item_id", None) == item_id or getattr(getattr(e, "error", None), "item_id", None)
               == item_id for e in events if e.type in ("input.committed", "error")):
            return
        await asyncio.sleep(0.005)
    raise AssertionError("no commit")


def make_items(events, cache=None, **config):
    pool = ThreadPoolExecutor(2, thread_name_prefix="media-decode")
    cache = MediaCache(1 << 24) if cache is None else cache
    return SessionItems(ServiceConfig(**config), MEDIA, cache, pool, events.append)


def test_chunked_uploads_equal_whole_file_decoding():
    video = make_video("webm", "vp8", seconds=1.0)
    wav = make_wav(tone(seconds=0.5), 16000)

    async def go():
        events = []
        items = make_items(events)
        await upload(items, events, chunks("img", PNG, "image", "image/png", size=50))
        await upload(items, events, chunks("vid", video, "video", "video/webm", size=700))
        await upload(items, events, chunks("aud", wav, "audio", "audio/wav", size=900))
        results = {key: await items.items[key].result for key in ("img", "vid", "aud")}
        items.close()
        return events, results

    events, results = run(go())
    assert [e.type for e in events] == ["input.committed"] * 3
    assert np.array_equal(results["img"], np.asarray(Image.open(io.BytesIO(PNG)).convert("RGB")))
    frames = [f.image for f in decode_video(video, "video/webm", DEFAULT_MEDIA_LIMITS)]
    assert len(results["vid"]) == len(frames) and all(np.array_equal(a, b) for a, b in zip(results["vid"], frames))
    samples, rate = decode_audio(wav, "audio/wav", DEFAULT_MEDIA_LIMITS)
    assert results["aud"][1] == rate and np.array_equal(results["aud"][0], samples)
    committed = {e.item_id: e for e in events}
    assert committed["img"].num_tokens == MEDIA.num_tokens("image", None)
    assert committed["vid"].num_tokens == len(frames) * MEDIA.num_tokens("image", None)
    assert committed["aud"].num_tokens == MEDIA.num_tokens("audio", (samples, rate)) > 0


def test_decoding_never_runs_on_the_event_loop(monkeypatch):
    import service.media as media

    threads = []
    original = media.decode_image
    monkeypatch.setattr(media, "decode_image", lambda *a, **k: threads.append(threading.current_thread().name)
                        or original(*a, **k))

    async def go():
        events = []
        await upload(make_items(events), events, chunks("img", PNG, "image", "image/png"))
        return threading.current_thread().name

    loop_thread = run(go())
    assert threads and all(name.startswith("media-decode") and name != loop_thread for name in threads)


def test_known_content_skips_the_upload():
    digest = hashlib.sha256(PNG).hexdigest()

    async def go():
        cache, events = MediaCache(1 << 24), []
        await upload(make_items(events, cache), events, chunks("a", PNG, "image", "image/png", size=30))
        second = []
        items = make_items(second, cache)
        appends = chunks("b", PNG, "image", "image/png", size=30, content_hash=digest)
        for event in appends:
            items.append(event)
        return second, items.num_bytes, await items.items["b"].result

    events, num_bytes, image = run(go())
    assert [e.type for e in events] == ["input.known", "input.committed"] and events[1].cached
    assert num_bytes == 0 and image.shape == (4, 4, 3)


def test_delete_frees_the_session_budget_and_the_id():
    async def go():
        events = []
        items = make_items(events, max_session_media_bytes=len(PNG) + 10)
        await upload(items, events, chunks("x", PNG, "image", "image/png"))
        with pytest.raises(ProtocolError) as full:
            items.append(InputAppend("y", "image", "image/png", PNG, True))
        items.delete("x")
        assert items.num_bytes == 0
        await upload(items, events, chunks("x", PNG, "image", "image/png"))
        return full.value.code

    assert run(go()) == "media_too_large"


def test_a_model_without_that_modality_refuses_at_the_first_chunk():
    items = SessionItems(ServiceConfig(), ModelMedia(), MediaCache(0), None, lambda e: None)
    with pytest.raises(ProtocolError) as error:
        items.append(InputAppend("a", "image", "image/png", PNG, True))
    assert (error.value.code, error.value.field) == ("unsupported_media", "modality")

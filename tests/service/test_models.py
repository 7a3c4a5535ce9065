"""Models served side by side: --model lists, routing by the modalities of a request's media."""

from __future__ import annotations

import pytest

from encoders.encoder_config import audio_encoder_config, audio_preprocess_config, image_encoder_config
from protocol import ProtocolError
from service.config import ServiceConfig
from service.media_tokens import ModelMedia
from service.models import ModelSet, ServedModel, model_dirs

VISION = ModelMedia(image=image_encoder_config({"model_type": "llava"}))
AUDIO = ModelMedia(audio=audio_encoder_config({"model_type": "qwen2_audio"}),
                   audio_preprocess=audio_preprocess_config({"chunk_length": 2}))


def served(*medias: tuple[str, ModelMedia]) -> ModelSet:
    # Routing never touches an engine: each model's "engine" is its name.
    return ModelSet([ServedModel(name, f"/models/{name}", name, media)  # type: ignore[arg-type]
                     for name, media in medias])


def test_model_dirs_split_on_commas():
    assert model_dirs("models/demo/vision") == ["models/demo/vision"]
    assert model_dirs(" a/vision , b/audio ,") == ["a/vision", "b/audio"]
    with pytest.raises(ValueError, match="no checkpoint"):
        model_dirs(" , ")


def test_a_request_goes_to_the_first_model_that_takes_all_its_media():
    models = served(("vision", VISION), ("audio", AUDIO), ("text", ModelMedia()))
    assert models.route(["image"]).name == "vision"
    assert models.route(["video", "image"]).name == "vision"
    assert models.route(["audio"]).name == "audio"
    assert models.route([]).name == "vision"  # text only: the first model
    assert served(("text", ModelMedia()), ("vision", VISION)).route([]).name == "text"
    with pytest.raises(ProtocolError) as refused:
        models.route(["image", "audio"])
    assert refused.value.code == "unsupported_media"
    assert "no served model takes audio and image" in refused.value.message
    assert "vision: image, video; audio: audio; text: text" in refused.value.message


def test_a_single_model_gets_every_request():
    # As without routing: uploads are refused by modality, and the engine refuses the rest.
    assert served(("vision", VISION)).route(["audio"]).name == "vision"


def test_the_set_takes_each_modality_as_its_model_counts_it():
    media = served(("vision", VISION), ("audio", AUDIO)).media
    assert media.modalities == ("image", "video", "audio")
    assert media.num_tokens("image", None) == VISION.num_tokens("image", None) > 0
    clip = ([0.0] * 16000, 16000)
    assert media.num_tokens("audio", clip) == AUDIO.num_tokens("audio", clip) == 25
    assert served(("vision", VISION)).media is VISION


def test_served_model_name_joins_the_directory_names():
    assert ServiceConfig(model="models/demo/vision,models/demo/audio").model_name == "vision+audio"
    assert ServiceConfig(model="models/demo/vision").model_name == "vision"
    assert ServiceConfig(model="a,b", served_model_name="demo").model_name == "demo"


def test_python_m_service_serves_the_shipped_demo_models_by_default():
    from service.__main__ import DEMO_MODELS, demo_model

    assert [path.name for path in DEMO_MODELS] == ["vision", "audio"]  # text-only requests go to vision
    assert demo_model() == ",".join(str(path) for path in DEMO_MODELS)

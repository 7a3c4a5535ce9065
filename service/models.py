"""The checkpoints one server serves side by side, and which of them a request goes to.

An engine serves one checkpoint, and no single architecture here takes both images and audio
(LLaVA sees, Qwen2-Audio hears). So `--model` takes several directories, comma-separated
(`--model models/demo/vision,models/demo/audio`); each gets its own engine, and a request goes
to the first model that takes every modality of its media: the order of `--model` decides, and
text-only requests go to the first model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from llm_core.engine_client import AsyncEngineClient
from protocol import ProtocolError
from protocol.errors import UNSUPPORTED_MEDIA
from service.media_tokens import ModelMedia


def model_dirs(model: str) -> list[str]:
    """The checkpoint directories of a --model value: one, or several separated by commas."""
    dirs = [part.strip() for part in model.split(",") if part.strip()]
    if not dirs:
        raise ValueError(f"--model names no checkpoint directory: {model!r}")
    return dirs


@dataclass(frozen=True)
class ServedModel:
    """One checkpoint with its engine client and the media it takes."""

    name: str
    model_dir: str
    engine: AsyncEngineClient
    media: ModelMedia


class ModelSet:
    """The served models, in --model order; the first is the default.

    `media` answers for the whole set (an item is accepted when some model takes its modality,
    and counted as that model counts it); `route` picks the model of a request.
    """

    def __init__(self, models: list[ServedModel]) -> None:
        if not models:
            raise ValueError("a server needs at least one model")
        self.models = tuple(models)
        self.media = ModelMedia.combined([model.media for model in self.models])

    @classmethod
    def build(cls, model: str, engine_mode: str, engine_options: dict,
              engine: AsyncEngineClient | None = None) -> "ModelSet":
        """One engine per directory of `model`; a given `engine` (tests) serves the single directory."""
        dirs = model_dirs(model)
        if engine is not None and len(dirs) > 1:
            raise ValueError("a given engine serves one model; --model names several")
        video_pool_stride = engine_options.get("video_pool_stride", 1)
        return cls([ServedModel(Path(path).name, path,
                                engine or AsyncEngineClient.from_options(path, mode=engine_mode, **engine_options),
                                ModelMedia.from_model_dir(path, video_pool_stride)) for path in dirs])

    @property
    def default(self) -> ServedModel:
        return self.models[0]

    @property
    def engines(self) -> list[AsyncEngineClient]:
        return [model.engine for model in self.models]

    def route(self, modalities: Iterable[str]) -> ServedModel:
        """The first model that takes every one of `modalities` (none: the default model);
        ProtocolError unsupported_media when no single model takes them all. A single model gets
        every request, as without routing: uploads and its engine refuse what it cannot take."""
        if len(self.models) == 1:
            return self.default
        wanted = set(modalities)
        for model in self.models:
            if wanted <= set(model.media.modalities):
                return model
        served = "; ".join(f"{m.name}: {', '.join(m.media.modalities) or 'text'}" for m in self.models)
        raise ProtocolError(UNSUPPORTED_MEDIA, f"no served model takes {' and '.join(sorted(wanted))} in one "
                            f"request ({served}); send them in separate responses")

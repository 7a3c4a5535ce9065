"""The media items of one session: uploads, limits, the content-hash shortcut, deletion.

Runs on the event loop only. Limits: bytes per item (over it the item fails, `media_too_large`),
bytes per session (the chunk is refused, `media_too_large`), items per session (`limit_exceeded`).
An item that fails is forgotten, so its id may be uploaded again. With an engine, video items
are also built up in the engine as they decode (service/media.py), under ids unique to the session.
"""

from __future__ import annotations

import itertools
from concurrent.futures import Executor
from typing import Callable

from protocol import ErrorEvent, ErrorInfo, InputAppend, InputCommitted, InputKnown, ProtocolError, ServerEvent
from protocol.errors import (DUPLICATE_ITEM, INVALID_FIELD, LIMIT_EXCEEDED, MEDIA_TOO_LARGE, UNKNOWN_ITEM,
                             UNSUPPORTED_MEDIA)
from llm_core.engine_client import AsyncEngineClient
from service.config import ServiceConfig
from service.media import MediaItem
from service.media_cache import MediaCache
from service.media_tokens import ModelMedia


class SessionItems:
    """Items by id. `emit(event)` queues a server event (input.committed or error) for the client.
    `engine`: video frames go to engine-side items as they decode (None: the data goes with each
    response); `owner` (the session id) makes their engine ids unique."""

    def __init__(self, config: ServiceConfig, model_media: ModelMedia, cache: MediaCache, pool: Executor,
                 emit: Callable[[ServerEvent], None], *, engine: AsyncEngineClient | None = None,
                 owner: str = "") -> None:
        self.config = config
        self.model_media = model_media
        self.cache = cache
        self.pool = pool
        self.emit = emit
        self.limits = config.media_limits
        self.items: dict[str, MediaItem] = {}
        self.num_bytes = 0
        self.engine = engine
        self.owner = owner
        self._num_started = itertools.count()

    def append(self, event: InputAppend) -> None:
        """Take one chunk; raises ProtocolError for a chunk that is refused."""
        item = self.items.get(event.item_id)
        if item is None:
            item = self._start(event)
            if item is None:
                return
        elif item.is_final:
            raise _error(DUPLICATE_ITEM, f"item {event.item_id!r} is already complete", event)
        elif (item.modality, item.mime) != (event.modality, event.mime):
            raise _error(INVALID_FIELD, f"item {event.item_id!r} was started as {item.modality} {item.mime!r}; "
                         "every chunk must repeat its modality and mime", event, field="mime")
        if item.cached:  # input.known: the rest of the upload is not needed
            item.is_final = item.is_final or event.final
            return
        size = len(event.data)
        if self.num_bytes + size > self.config.max_session_media_bytes:
            raise _error(MEDIA_TOO_LARGE, f"the session's media would exceed "
                         f"{self.config.max_session_media_bytes} bytes; delete items first", event)
        if item.num_bytes + size > self.config.max_item_bytes:
            self._drop(item)
            item.fail(ErrorInfo(MEDIA_TOO_LARGE, f"item {item.item_id!r} is over the limit of "
                                f"{self.config.max_item_bytes} bytes", "input.append", item_id=item.item_id))
            return
        self.num_bytes += size
        item.feed(event.data, event.final)

    @property
    def is_decoding(self) -> bool:
        """Whether an item is still being uploaded or decoded."""
        return any(not item.result.done() for item in self.items.values())

    def get(self, item_id: str, event_type: str = "response.create") -> MediaItem:
        item = self.items.get(item_id)
        if item is None:
            raise ProtocolError(UNKNOWN_ITEM, f"unknown item {item_id!r}: upload it with input.append first",
                                event_type=event_type, item_id=item_id)
        return item

    def delete(self, item_id: str) -> None:
        self._drop(self.get(item_id, "input.delete")).close()

    def close(self) -> None:
        for item in list(self.items.values()):
            self._drop(item).close()

    def _start(self, event: InputAppend) -> MediaItem | None:
        if event.modality not in self.model_media.modalities:
            takes = ", ".join(self.model_media.modalities) or "no media"
            raise _error(UNSUPPORTED_MEDIA, f"this model cannot take {event.modality} input (it takes {takes})",
                         event, field="modality")
        if len(self.items) >= self.config.max_items_per_session:
            raise _error(LIMIT_EXCEEDED, f"the session holds {len(self.items)} items, the limit; delete "
                         "items first", event)
        if event.content_hash is not None:
            known = self.cache.get((event.modality, event.mime, event.content_hash))
            if known is not None:
                item = MediaItem.from_cache(event.item_id, event.modality, event.mime, known.data, known.num_tokens)
                item.is_final = event.final
                self.items[event.item_id] = item
                self.emit(InputKnown(event.item_id, event.content_hash))
                self.emit(InputCommitted(event.item_id, known.num_tokens, True))
                return None
        item = MediaItem(event.item_id, event.modality, event.mime, limits=self.limits, pool=self.pool,
                         on_done=self._on_done, engine=self.engine,
                         engine_item_id=f"{self.owner}/{event.item_id}/{next(self._num_started)}")
        self.items[event.item_id] = item
        return item

    def _on_done(self, item: MediaItem) -> None:
        error = item.result.exception()
        if error is not None:
            self._drop(item)
            self.emit(ErrorEvent(error.info))
            return
        data = item.result.result()
        item.num_tokens = self.model_media.num_tokens(item.modality, data)
        self.emit(InputCommitted(item.item_id, item.num_tokens, False))
        if self.cache.max_bytes and item.sha256 is not None:
            self.cache.put((item.modality, item.mime, item.sha256), data, item.num_tokens)

    def _drop(self, item: MediaItem) -> MediaItem:
        if self.items.get(item.item_id) is item:
            del self.items[item.item_id]
            if not item.cached:
                self.num_bytes -= item.num_bytes
        return item


def _error(code: str, message: str, event: InputAppend, field: str | None = None) -> ProtocolError:
    return ProtocolError(code, message, field=field, event_type="input.append", item_id=event.item_id)


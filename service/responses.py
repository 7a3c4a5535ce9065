"""One response of a WebSocket session, as an asyncio task: check, wait for media, stream, finish.

Events it queues, in order: `error` (a bad response_format or option: nothing else follows) or
`response.created`, then `response.delta`s, then exactly one `response.done`. It never waits on
the client: deltas go to the outbox, which merges them when the client lags.

Cancellation: `cancel()` (response.cancel) cancels the task and the response ends with status
cancelled; cancelling the task otherwise (disconnect) ends it silently. Either way leaving the
engine stream aborts the engine request at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import aclosing
from typing import Callable

from llm_core.engine_client import EngineDeadError, EngineRequest, EngineRequestError
from protocol import (ErrorEvent, ErrorInfo, GenerationOptions, ProtocolError, ResponseCreate, ResponseCreated,
                      ResponseDone)
from protocol.errors import CONTEXT_LENGTH_EXCEEDED, INTERNAL_ERROR, INVALID_FIELD, INVALID_SCHEMA
from service.gateway import Gateway
from service.generation import (MediaData, UsageCounter, chat_prompt, check_response_format, finish_status,
                                sampling_params, wire_logprobs)
from service.media import MediaFailure, MediaItem
from service.outbox import Outbox

logger = logging.getLogger(__name__)


class Response:
    """A response in flight. `on_end(response_id)` runs when its task ends, however it ends."""

    def __init__(self, gateway: Gateway, outbox: Outbox, owner: str, response_id: str, event: ResponseCreate,
                 options: GenerationOptions, instructions: str | None, items: dict[str, MediaItem],
                 on_end: Callable[[str], None], *, session_span=None, default_traceparent: str | None = None) -> None:
        self.gateway = gateway
        self.outbox = outbox
        self.response_id = response_id
        self.request_id = gateway.engine_request_id(owner, response_id)
        self.event = event
        self.options = options
        self.instructions = instructions
        self.items = items
        self.engine = gateway.engine  # that of the model that takes the items' media, chosen in _check
        self.usage = UsageCounter()
        self.is_cancel_requested = False
        self.is_created = False
        self._on_end = on_end
        # Metrics and the response's trace (continuing the event's traceparent, else the session's).
        self.watch = gateway.telemetry.start_response(
            "ws", response_id, options, traceparent=event.traceparent or default_traceparent, session_id=owner,
            session_span=session_span, metadata=event.metadata)
        self.task = asyncio.get_running_loop().create_task(self._run(), name=f"response-{response_id}")

    def cancel(self) -> None:
        """response.cancel: end with status cancelled."""
        self.is_cancel_requested = True
        self.task.cancel()

    async def _run(self) -> None:
        try:
            params = await self._check()
            if params is None:
                return
            self._created()
            await self._generate(params)
        except asyncio.CancelledError:
            if not self.is_cancel_requested:
                raise
            if not self.is_created:
                self._created()
            self._done("cancelled", "cancelled")
        except MediaFailure as failure:
            self._done("failed", "error", failure.info)
        except EngineRequestError as exc:
            self._done("failed", "error", self._engine_error(exc))
        except EngineDeadError:
            self._done("failed", "error", self._error(INTERNAL_ERROR, "the engine is not running; retry later"))
        except Exception:
            logger.exception("response %s failed", self.response_id)
            self._done("failed", "error", self._error(INTERNAL_ERROR, "internal error"))
        finally:
            self.watch.finish("cancelled", "cancelled", self.usage.usage())  # no-op unless ended silently
            self._on_end(self.response_id)

    async def _check(self):
        """SamplingParams for the request, or None after queueing an error event."""
        try:
            # The served model that takes this response's media (several models: service/models.py).
            self.engine = self.gateway.route(item.modality for item in self.items.values()).engine
            params = sampling_params(self.options, self.event.response_format, self.gateway.max_model_len)
            if params.has_constraint:
                loop = asyncio.get_running_loop()
                start_ns = time.time_ns()
                try:
                    await loop.run_in_executor(self.gateway.pool, check_response_format, self.event.response_format)
                except ProtocolError as exc:
                    self.watch.grammar_check(start_ns, time.time_ns(), exc.message)
                    raise
                self.watch.grammar_check(start_ns, time.time_ns())
            return params
        except ProtocolError as exc:
            exc.event_type, exc.response_id = "response.create", self.response_id
            self.watch.finish("failed", None, None, exc.code)
            self.outbox.put(ErrorEvent(exc.to_info()))
            return None

    async def _generate(self, params) -> None:
        media = {}
        for item_id, item in self.items.items():
            # shield: cancelling this response must not cancel the item, which the session owns.
            media[item_id] = MediaData(item.modality, await asyncio.shield(item.result), item.engine_item_id)
        self.watch.media(self.items.values())
        prompt = chat_prompt(self.event.messages, self.instructions, media)
        request = EngineRequest(self.request_id, prompt, params, priority=self.options.priority or 0,
                                traceparent=self.watch.engine_traceparent)
        final = None
        async with aclosing(self.engine.generate(request, on_late_trace=self.watch.add_engine_records)) as stream:
            async for delta in stream:
                self.usage.add(delta)
                self.watch.on_delta(delta)
                if delta.new_token_ids or delta.text_delta:
                    self.outbox.put_delta(self.response_id, delta.text_delta, delta.new_token_ids,
                                          wire_logprobs(delta))
                if delta.finished:
                    final = delta
        if final is None:
            raise EngineDeadError("the engine stream ended without a finished delta")
        status, reason = finish_status(final.finish_reason)
        error = None
        if status == "failed":
            code = INVALID_SCHEMA if params.has_constraint else INTERNAL_ERROR
            error = self._error(code, final.error or "generation failed")
        self._done(status, reason, error)

    def _created(self) -> None:
        self.is_created = True
        self.outbox.put(ResponseCreated(self.response_id))

    def _engine_error(self, exc: EngineRequestError) -> ErrorInfo:
        if exc.kind != "invalid_request":
            logger.error("engine failed request %s: %s", self.request_id, exc)
            return self._error(INTERNAL_ERROR, "the engine failed this request")
        message = str(exc)
        code = CONTEXT_LENGTH_EXCEEDED if "max_model_len" in message else INVALID_FIELD
        return self._error(code, message[:500])

    def _error(self, code: str, message: str) -> ErrorInfo:
        return ErrorInfo(code, message, "response.create", response_id=self.response_id)

    def _done(self, status: str, finish_reason: str | None, error: ErrorInfo | None = None) -> None:
        usage = self.usage.usage()
        # The span ends (and queues for export) before response.done is queued.
        trace_id = self.watch.finish(status, finish_reason, usage, error.code if error is not None else None)
        self.outbox.put(ResponseDone(self.response_id, status, finish_reason, usage, trace_id=trace_id, error=error))

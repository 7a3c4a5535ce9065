"""Turns the scheduler's token updates into text deltas, and enforces stop strings."""

from __future__ import annotations

from llm_core.detokenizer import IncrementalDetokenizer
from llm_core.outputs import CompletionDelta
from llm_core.request import RequestStatus
from llm_core.scheduler import Scheduler
from llm_core.scheduler_output import RequestUpdate
from llm_core.tokenizer import Tokenizer


class OutputProcessor:
    """One incremental detokenizer per live request.

    A stop string found in the text finishes the request in the scheduler when its update is
    processed: in the same step, or with async output processing (after a multi-step step) during
    the next one, whose tokens for it are then dropped; no token past it is ever emitted. The
    streamed text never contains it (unless include_stop_str_in_output) because the detokenizer
    holds back possible stop prefixes.
    """

    def __init__(self, tokenizer: Tokenizer, scheduler: Scheduler) -> None:
        self.tokenizer = tokenizer
        self.scheduler = scheduler
        self._detokenizers: dict[str, IncrementalDetokenizer] = {}

    def add_request(self, request_id: str, prompt_token_ids: list[int], params) -> None:
        self._detokenizers[request_id] = IncrementalDetokenizer(
            self.tokenizer, prompt_token_ids, skip_special_tokens=params.skip_special_tokens,
            stop=params.stop, include_stop_str_in_output=params.include_stop_str_in_output)

    def process(self, updates: list[RequestUpdate]) -> list[CompletionDelta]:
        deltas = []
        for update in updates:
            detok = self._detokenizers.get(update.request_id)
            if detok is None:
                continue
            text, new_token_ids = "", update.new_token_ids
            if not detok.stop:  # several tokens (accepted drafts, multi-step) decode as one window
                text = detok.add_tokens(new_token_ids)
            else:
                for i, token_id in enumerate(new_token_ids):  # token by token: none past a stop string
                    text += detok.add_tokens((token_id,))
                    if detok.is_stopped:
                        new_token_ids = new_token_ids[:i + 1]
                        break
            finish_reason, stop_reason = update.finish_reason, update.stop_reason
            if detok.is_stopped:
                if finish_reason is None:
                    self.scheduler.finish_requests([update.request_id], RequestStatus.FINISHED_STOPPED,
                                                   stop_reason=detok.stop_reason)
                finish_reason, stop_reason = "stop", detok.stop_reason
            finished = finish_reason is not None
            if finished:
                text += detok.flush()
                del self._detokenizers[update.request_id]
            deltas.append(CompletionDelta(
                request_id=update.request_id, new_token_ids=new_token_ids, text_delta=text,
                finished=finished, finish_reason=finish_reason, stop_reason=stop_reason,
                num_prompt_tokens=update.num_prompt_tokens, num_cached_tokens=update.num_cached_tokens,
                logprobs=update.logprobs, num_draft_tokens=update.num_draft_tokens,
                num_accepted_draft_tokens=update.num_accepted_draft_tokens, num_drafts=int(update.num_draft_tokens > 0)))
        return deltas

    def abort(self, request_id: str) -> None:
        self._detokenizers.pop(request_id, None)

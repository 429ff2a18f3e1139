"""The one stand-in for vLLM (which cannot be installed here): ``generate`` as OpenRLHF's rollout
executor awaits it — prompt token ids in, a ``RequestOutput``-shaped object out — returning fixed
responses in order, each after an optional delay (how long its generation "took")."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any


class FakeEngine:
    def __init__(self, tokenizer: Any, responses: Sequence[str], delays_s: Sequence[float] | None = None) -> None:
        self.tokenizer = tokenizer
        self.responses = list(responses)
        self.delays_s = list(delays_s) if delays_s is not None else [0.0] * len(self.responses)

    async def generate(self, prompt_token_ids: list[int], sampling_params: Any, multi_modal_data: Any = None) -> Any:
        text, delay = self.responses.pop(0), self.delays_s.pop(0)
        if delay:
            await asyncio.sleep(delay)
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"] + [self.tokenizer.eos_token_id]
        return SimpleNamespace(outputs=[SimpleNamespace(token_ids=ids, text=text, finish_reason="stop", logprobs=None)])


def sampling_params(max_tokens: int = 64) -> Any:
    """The two fields of vLLM's ``SamplingParams`` the single-turn executor reads."""
    return SimpleNamespace(max_tokens=max_tokens, logprobs=None)

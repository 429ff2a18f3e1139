"""Models the hand-written decoder does not read: plain transformers ``generate``, same API.

Requests are decoded ``slots`` at a time, left-padded, with the engine's per-row sampling
(:class:`fastgen.sampling.LogitsSampler`, seeded by ``hash(seed, step)``) and per-row stop ids and
budgets, so results follow the same rules as :class:`fastgen.engine.Engine` (not the same floats).
No static cache, no graphs, no refill: correct but not fast.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from fastgen.sampling import LogitsSampler
from fastgen.types import Completion, EngineConfig, EngineTimeout, Request

__all__ = ["GenerateFallback"]


class GenerateFallback:
    """``transformers`` ``generate`` behind the :class:`~fastgen.engine.Engine` interface."""

    def __init__(self, model: Any, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        self.model = model
        self.device = next(model.parameters()).device
        self.last_stats: dict[str, float] = {}

    def release(self) -> None:
        """Nothing is held between calls."""

    @torch.inference_mode()
    def generate(
        self,
        requests: Sequence[Request],
        *,
        deadline: float | None = None,
        on_complete: Callable[[int, Completion], None] | None = None,
    ) -> list[Completion]:
        started = time.monotonic()
        results: list[Completion] = [Completion()] * len(requests)
        order = sorted(range(len(requests)), key=lambda i: -len(requests[i].prompt_ids))
        for start in range(0, len(order), self.config.slots):
            if deadline is not None and time.monotonic() > deadline:
                raise EngineTimeout("generation passed its deadline")
            rows = order[start : start + self.config.slots]
            for i, completion in zip(rows, self._batch([requests[i] for i in rows]), strict=True):
                results[i] = completion
                if on_complete is not None:
                    on_complete(i, completion)
        self.last_stats = {"seconds": time.monotonic() - started}
        return results

    def _batch(self, reqs: list[Request]) -> list[Completion]:
        from transformers import GenerationConfig, LogitsProcessorList

        width = max(len(r.prompt_ids) for r in reqs)
        pad = 0
        ids = torch.full((len(reqs), width), pad, dtype=torch.long)
        mask = torch.zeros((len(reqs), width), dtype=torch.long)
        for row, r in enumerate(reqs):
            ids[row, width - len(r.prompt_ids) :] = torch.tensor(list(r.prompt_ids), dtype=torch.long)
            mask[row, width - len(r.prompt_ids) :] = 1
        sampler = LogitsSampler.from_specs(reqs)
        config = GenerationConfig(
            max_new_tokens=max(r.max_new_tokens for r in reqs), do_sample=False, pad_token_id=pad, eos_token_id=None
        )
        out = self.model.generate(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            generation_config=config,
            logits_processor=LogitsProcessorList([sampler]),
        )
        completions = []
        for r, row in zip(reqs, out[:, width:].tolist(), strict=True):
            row = row[: r.max_new_tokens]
            stops = set(r.stop_ids)
            cut = next((k for k, t in enumerate(row) if t in stops), None)
            completions.append(Completion(row, False) if cut is None else Completion(row[: cut + 1], True))
        return completions

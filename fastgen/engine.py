"""The decoding engine: fixed slots, a static KV cache, graph-captured decode, refill of finished rows.

A small orchestrator over three parts (the layout of compact engines such as nano-vLLM):
:mod:`fastgen.scheduler` (which request runs in which slot), :mod:`fastgen.model_runner` (prefill,
the decode step, CUDA graphs) and :mod:`fastgen.kv_cache` (the static cache and per-slot state).

:meth:`Engine.generate` takes :class:`~fastgen.types.Request` objects and returns one
:class:`~fastgen.types.Completion` each, in order. Requests wait in a queue (longest prompt first, to
pad prefill batches little); whenever slots are free, the next requests are prefilled into them
together. Then every slot decodes one token per step, all at once: on a GPU each step is the replay
of a CUDA graph (one per (attention length bucket, sampling mode), captured on first use); on the
CPU the same function runs eagerly. Every ``sync_every`` steps the host reads which rows finished
(stop token or budget), copies their tokens out and refills their slots from the queue.

A row's tokens depend on its prompt, its parameters and its seed only (:mod:`fastgen.sampling`), so a
request gives the same completion alone, in a full batch, or refilled into another slot (up to the
floating-point differences of a different batch shape, which can flip a near-tie).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from fastgen.kv_cache import attention_length
from fastgen.llama import LlamaWeights
from fastgen.model_runner import ModelRunner
from fastgen.scheduler import Scheduler
from fastgen.types import Completion, EngineConfig, EngineTimeout, Request

__all__ = ["Engine"]


class Engine:
    """Fast generation for a Llama-family transformers model (see the module docstring)."""

    def __init__(self, model: Any, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        self.model = model
        self.runner = ModelRunner(model, self.config)
        self.last_stats: dict[str, float] = {}

    @property
    def weights(self) -> LlamaWeights:
        return self.runner.weights

    @property
    def device(self) -> torch.device:
        return self.runner.device

    @property
    def use_graphs(self) -> bool:
        return self.runner.use_graphs

    @property
    def graphs_captured(self) -> int:
        """CUDA graphs held now (benchmarks report it)."""
        return self.runner.graphs_captured

    def release(self) -> None:
        """Free the KV cache and the captured graphs (the next call allocates them again)."""
        self.runner.release()

    @torch.inference_mode()
    def generate(
        self,
        requests: Sequence[Request],
        *,
        deadline: float | None = None,
        on_complete: Callable[[int, Completion], None] | None = None,
    ) -> list[Completion]:
        """Complete every request; ``deadline`` (``time.monotonic()``) raises :class:`EngineTimeout`
        when passed; ``on_complete(index, completion)`` is called as each request finishes."""
        if not requests:
            return []
        for r in requests:
            if len(r.stop_ids) > self.config.max_stop_ids:
                raise ValueError(
                    f"a request has {len(r.stop_ids)} stop ids; max_stop_ids is {self.config.max_stop_ids}"
                )
        started = time.monotonic()
        runner = self.runner
        runner.prepare(
            max(len(r.prompt_ids) + r.max_new_tokens for r in requests), max(r.max_new_tokens for r in requests)
        )
        scheduler = Scheduler(requests, self.config.slots)
        results: list[Completion | None] = [None] * len(requests)
        steps_run = 0
        while scheduler.busy():
            if deadline is not None and time.monotonic() > deadline:
                raise EngineTimeout(f"generation passed its deadline with {scheduler.waiting} requests queued")
            admitted = scheduler.admit()
            if admitted:
                runner.prefill([slot for slot, _ in admitted], [requests[i] for _, i in admitted])
                self._harvest(scheduler, results, on_complete)
            if not scheduler.live():
                continue
            mode = scheduler.mode()
            for _ in range(self.config.sync_every):
                kv_len = attention_length(
                    scheduler.top_position(), cache_len=runner.cache_len, kv_bucket=self.config.kv_bucket
                )
                runner.decode(kv_len, mode)
                steps_run += 1
                scheduler.advance()
            self._harvest(scheduler, results, on_complete)
        self.last_stats = {"seconds": time.monotonic() - started, "decode_steps": float(steps_run)}
        return [r if r is not None else Completion() for r in results]

    def _harvest(
        self,
        scheduler: Scheduler,
        results: list[Completion | None],
        on_complete: Callable[[int, Completion], None] | None,
    ) -> None:
        """Collect the rows that finished and free their slots."""
        finished = scheduler.retire(self.runner.finished())
        if not finished:
            return
        token_lists = self.runner.tokens_of([slot for slot, _ in finished])
        for (_, i), ids in zip(finished, token_lists, strict=True):
            stops = set(scheduler.requests[i].stop_ids)
            completion = Completion(token_ids=ids, finished=bool(ids) and ids[-1] in stops)
            results[i] = completion
            if on_complete is not None:
                on_complete(i, completion)

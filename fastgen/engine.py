"""The decoding engine: fixed slots, a static KV cache, graph-captured decode, refill of finished rows.

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

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import torch

from fastgen.llama import KVCache, LlamaWeights, decode, prefill
from fastgen.sampling import Mode, RowParams, select_tokens
from fastgen.types import Completion, EngineConfig, EngineTimeout, Request

__all__ = ["Engine"]

log = logging.getLogger(__name__)


class _Slots:
    """The per-slot device state the decode step reads and updates in place (fixed addresses)."""

    def __init__(self, slots: int, max_new: int, max_stop: int, device: torch.device) -> None:
        def longs(*shape: int, fill: int = 0) -> torch.Tensor:
            return torch.full(shape, fill, dtype=torch.long, device=device)

        self.tokens = longs(slots)
        self.positions = longs(slots)
        self.steps = longs(slots)
        self.limit = longs(slots)
        self.done = torch.ones(slots, dtype=torch.bool, device=device)
        self.stop = longs(slots, max_stop, fill=-1)
        self.out = longs(slots, max_new + 1)  # the last column takes the writes of finished rows
        self.params = RowParams(
            keys=longs(slots),
            temperature=torch.ones(slots, dtype=torch.float32, device=device),
            top_p=torch.full((slots,), 2.0, dtype=torch.float32, device=device),
            sampled=torch.zeros(slots, dtype=torch.bool, device=device),
        )

    def mutable(self) -> list[torch.Tensor]:
        return [self.tokens, self.positions, self.steps, self.done, self.out]


class Engine:
    """Fast generation for a Llama-family transformers model (see the module docstring)."""

    def __init__(self, model: Any, config: EngineConfig | None = None) -> None:
        self.config = config or EngineConfig()
        self.model = model
        self.weights = LlamaWeights.from_model(model)
        self.device = self.weights.device
        self.use_graphs = self.config.cuda_graphs and self.device.type == "cuda"
        self._cache: KVCache | None = None
        self._slots: _Slots | None = None
        self._graphs: dict[tuple[int, Mode], torch.cuda.CUDAGraph] = {}
        self._pool: Any = None
        self.last_stats: dict[str, float] = {}

    # -- capacity ------------------------------------------------------------------------------

    def _ensure(self, seq_len: int, max_new: int) -> tuple[KVCache, _Slots]:
        fixed = self.config.max_seq_len
        if fixed is not None and seq_len > fixed:
            raise ValueError(f"a request needs {seq_len} positions but max_seq_len is {fixed}")
        need_seq = fixed or -(-seq_len // self.config.kv_bucket) * self.config.kv_bucket
        have = self._cache
        slots = self._slots
        if have is None or have.seq_len < need_seq or slots is None or slots.out.shape[1] - 1 < max_new:
            self.release()
            seq = max(need_seq, have.seq_len if have is not None else 0)
            self._cache = KVCache.allocate(self.weights, self.config.slots, seq)
            self._slots = _Slots(self.config.slots, seq, self.config.max_stop_ids, self.device)
        assert self._cache is not None and self._slots is not None
        return self._cache, self._slots

    def release(self) -> None:
        """Free the KV cache and the captured graphs (the next call allocates them again)."""
        self._graphs.clear()
        self._cache = None
        self._slots = None
        self._pool = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # -- the step ------------------------------------------------------------------------------

    def _step(self, cache: KVCache, s: _Slots, kv_len: int, mode: Mode) -> None:
        logits = decode(self.weights, cache, s.tokens, s.positions, kv_len)
        chosen = select_tokens(logits, s.params, s.steps, mode)
        live = ~s.done
        column = torch.where(live, s.steps, s.out.shape[1] - 1)
        s.out.scatter_(1, column[:, None], chosen[:, None])
        hit = (chosen[:, None] == s.stop).any(dim=-1)
        advance = live.long()
        s.steps.add_(advance)
        s.positions.add_(advance)
        s.tokens.copy_(torch.where(live, chosen, s.tokens))
        s.done.copy_(s.done | hit | (s.steps >= s.limit))

    def _run_step(self, cache: KVCache, s: _Slots, kv_len: int, mode: Mode) -> None:
        if not self.use_graphs:
            self._step(cache, s, kv_len, mode)
            return
        graph = self._graphs.get((kv_len, mode))
        if graph is None:
            graph = self._capture(cache, s, kv_len, mode)
        graph.replay()

    def _capture(self, cache: KVCache, s: _Slots, kv_len: int, mode: Mode) -> torch.cuda.CUDAGraph:
        saved = [t.clone() for t in s.mutable()]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm-up outside the graph (cuBLAS workspaces, lazy inits)
                self._step(cache, s, kv_len, mode)
        torch.cuda.current_stream().wait_stream(stream)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            self._step(cache, s, kv_len, mode)
        for t, old in zip(s.mutable(), saved, strict=True):
            t.copy_(old)
        self._graphs[(kv_len, mode)] = graph
        return graph

    # -- prefill -------------------------------------------------------------------------------

    def _admit(self, cache: KVCache, s: _Slots, free: list[int], batch: list[tuple[int, Request]]) -> None:
        """Prefill ``batch`` (longest first) into slots ``free`` (same length)."""
        dev = self.device
        widest = len(batch[0][1].prompt_ids)
        per_call = max(1, self.config.prefill_tokens // widest)
        for start in range(0, len(batch), per_call):
            part = batch[start : start + per_call]
            slots_list = free[start : start + len(part)]
            reqs = [r for _, r in part]
            width = max(len(r.prompt_ids) for r in reqs)
            ids = torch.zeros((len(reqs), width), dtype=torch.long)
            for row, r in enumerate(reqs):
                ids[row, : len(r.prompt_ids)] = torch.tensor(list(r.prompt_ids), dtype=torch.long)
            lengths = torch.tensor([len(r.prompt_ids) for r in reqs], dtype=torch.long, device=dev)
            slot_idx = torch.tensor(slots_list, dtype=torch.long, device=dev)
            params = RowParams.build(
                [r.temperature for r in reqs], [r.top_p for r in reqs], [r.seed for r in reqs], dev
            )
            logits = prefill(self.weights, cache, ids.to(dev), lengths, slot_idx)
            mode = Mode.of([r.temperature for r in reqs], [r.top_p for r in reqs])
            first = select_tokens(logits, params, torch.zeros(len(reqs), dtype=torch.long, device=dev), mode)
            stop = torch.full((len(reqs), self.config.max_stop_ids), -1, dtype=torch.long)
            for row, r in enumerate(reqs):
                if r.stop_ids:
                    stop[row, : len(r.stop_ids)] = torch.tensor(list(r.stop_ids), dtype=torch.long)
            stop = stop.to(dev)
            limit = torch.tensor([r.max_new_tokens for r in reqs], dtype=torch.long, device=dev)
            s.tokens[slot_idx] = first
            s.positions[slot_idx] = lengths
            s.steps[slot_idx] = 1
            s.limit[slot_idx] = limit
            s.stop[slot_idx] = stop
            s.out[slot_idx, 0] = first
            s.done[slot_idx] = (first[:, None] == stop).any(dim=-1) | (limit <= 1)
            s.params.keys[slot_idx] = params.keys
            s.params.temperature[slot_idx] = params.temperature
            s.params.top_p[slot_idx] = params.top_p
            s.params.sampled[slot_idx] = params.sampled

    # -- the loop ------------------------------------------------------------------------------

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
        cache, s = self._ensure(
            max(len(r.prompt_ids) + r.max_new_tokens for r in requests), max(r.max_new_tokens for r in requests)
        )
        s.done.fill_(True)
        queue = deque(sorted(range(len(requests)), key=lambda i: -len(requests[i].prompt_ids)))
        owner: list[int | None] = [None] * self.config.slots
        reach = [0] * self.config.slots  # an upper bound of each live slot's next position
        results: list[Completion | None] = [None] * len(requests)
        steps_run = 0
        bucket = self.config.kv_bucket
        while queue or any(o is not None for o in owner):
            if deadline is not None and time.monotonic() > deadline:
                raise EngineTimeout(f"generation passed its deadline with {len(queue)} requests queued")
            free = [i for i, o in enumerate(owner) if o is None]
            if free and queue:
                taken = [queue.popleft() for _ in range(min(len(free), len(queue)))]
                free = free[: len(taken)]
                self._admit(cache, s, free, [(i, requests[i]) for i in taken])
                for slot, i in zip(free, taken, strict=True):
                    owner[slot] = i
                    reach[slot] = len(requests[i].prompt_ids)
                self._harvest(s, owner, results, requests, on_complete)
            live = [i for i, o in enumerate(owner) if o is not None]
            if not live:
                continue
            mode = Mode.of(
                [requests[owner[i]].temperature for i in live],  # type: ignore[index]
                [requests[owner[i]].top_p for i in live],  # type: ignore[index]
            )
            caps = {i: len(requests[owner[i]].prompt_ids) + requests[owner[i]].max_new_tokens - 1 for i in live}  # type: ignore[index]
            for _ in range(self.config.sync_every):
                top = max(reach[i] for i in live)
                kv_len = min(cache.seq_len, -(-(top + 1) // bucket) * bucket)
                self._run_step(cache, s, kv_len, mode)
                steps_run += 1
                for i in live:
                    reach[i] = min(reach[i] + 1, caps[i])
            self._harvest(s, owner, results, requests, on_complete)
        self.last_stats = {"seconds": time.monotonic() - started, "decode_steps": float(steps_run)}
        return [r if r is not None else Completion() for r in results]

    def _harvest(
        self,
        s: _Slots,
        owner: list[int | None],
        results: list[Completion | None],
        requests: Sequence[Request],
        on_complete: Callable[[int, Completion], None] | None,
    ) -> None:
        done = s.done.tolist()
        finished = [i for i, o in enumerate(owner) if o is not None and done[i]]
        if not finished:
            return
        idx = torch.tensor(finished, dtype=torch.long, device=self.device)
        steps = s.steps[idx].tolist()
        rows = s.out[idx].tolist()
        for slot, n, row in zip(finished, steps, rows, strict=True):
            i = owner[slot]
            assert i is not None
            ids = row[:n]
            stops = set(requests[i].stop_ids)
            completion = Completion(token_ids=ids, finished=bool(ids) and ids[-1] in stops)
            results[i] = completion
            owner[slot] = None
            if on_complete is not None:
                on_complete(i, completion)

"""Running the model: batched prefill into slots, the decode step, and its CUDA graphs.

:class:`ModelRunner` reads a Llama-family model's tensors (:mod:`fastgen.llama`) and owns the engine's
:class:`~fastgen.kv_cache.StaticCache`. :meth:`ModelRunner.prefill` runs prompts into given slots and
picks each row's first token; :meth:`ModelRunner.decode` runs one step for every slot at once (the
forward, :func:`~fastgen.sampling.select_tokens`, the in-place update of the slot state). On a GPU the
step is captured as a CUDA graph per (attention length, sampling mode) on first use and replayed after;
on the CPU the same function runs eagerly. The decode step never synchronises with the host.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from fastgen.kv_cache import KVCache, SlotState, StaticCache
from fastgen.llama import LlamaWeights, decode, prefill
from fastgen.sampling import Mode, RowParams, select_tokens
from fastgen.types import EngineConfig, Request

__all__ = ["ModelRunner"]


class ModelRunner:
    """Prefill and decode over a static cache for one Llama-family model (see the module docstring)."""

    def __init__(self, model: Any, config: EngineConfig) -> None:
        self.config = config
        self.weights = LlamaWeights.from_model(model)
        self.device = self.weights.device
        self.use_graphs = config.cuda_graphs and self.device.type == "cuda"
        self.cache = StaticCache(
            self.weights,
            slots=config.slots,
            max_stop_ids=config.max_stop_ids,
            kv_bucket=config.kv_bucket,
            max_seq_len=config.max_seq_len,
        )
        self._graphs: dict[tuple[int, Mode], torch.cuda.CUDAGraph] = {}
        self._pool: Any = None

    @property
    def graphs_captured(self) -> int:
        """CUDA graphs held now (one per attention length and sampling mode used since the last release)."""
        return len(self._graphs)

    @property
    def cache_len(self) -> int:
        """Positions per slot of the cache held now (0 before the first :meth:`prepare`)."""
        return self.cache.kv.seq_len if self.cache.kv is not None else 0

    def _held(self) -> tuple[KVCache, SlotState]:
        kv, state = self.cache.kv, self.cache.state
        if kv is None or state is None:
            raise RuntimeError("ModelRunner: prepare() must run before prefill or decode")
        return kv, state

    # -- capacity ------------------------------------------------------------------------------

    def prepare(self, seq_len: int, max_new: int) -> None:
        """Make room for requests of up to ``seq_len`` positions and ``max_new`` new tokens (growing the
        cache drops the graphs captured on the old one), and mark every slot free."""
        if not self.cache.fits(seq_len, max_new):
            self._drop_graphs()
            self.cache.grow(seq_len)
        self._held()[1].done.fill_(True)

    def _drop_graphs(self) -> None:
        self._graphs.clear()
        self._pool = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def release(self) -> None:
        """Free the KV cache and the captured graphs (the next :meth:`prepare` allocates them again)."""
        self._graphs.clear()
        self._pool = None
        self.cache.release()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # -- prefill -------------------------------------------------------------------------------

    def prefill(self, slots: Sequence[int], requests: Sequence[Request]) -> None:
        """Prefill ``requests`` (longest prompt first) into ``slots`` (same length) and start their rows
        on their first token, ``prefill_tokens`` padded prompt tokens per forward."""
        kv, state = self._held()
        dev = self.device
        widest = len(requests[0].prompt_ids)
        per_call = max(1, self.config.prefill_tokens // widest)
        for start in range(0, len(requests), per_call):
            reqs = requests[start : start + per_call]
            slot_list = slots[start : start + len(reqs)]
            width = max(len(r.prompt_ids) for r in reqs)
            ids = torch.zeros((len(reqs), width), dtype=torch.long)
            for row, r in enumerate(reqs):
                ids[row, : len(r.prompt_ids)] = torch.tensor(list(r.prompt_ids), dtype=torch.long)
            lengths = torch.tensor([len(r.prompt_ids) for r in reqs], dtype=torch.long, device=dev)
            slot_idx = torch.tensor(list(slot_list), dtype=torch.long, device=dev)
            temperatures = [r.temperature for r in reqs]
            top_ps = [r.top_p for r in reqs]
            params = RowParams.build(temperatures, top_ps, [r.seed for r in reqs], dev)
            logits = prefill(self.weights, kv, ids.to(dev), lengths, slot_idx)
            first = select_tokens(
                logits, params, torch.zeros(len(reqs), dtype=torch.long, device=dev), Mode.of(temperatures, top_ps)
            )
            stop = torch.full((len(reqs), self.config.max_stop_ids), -1, dtype=torch.long)
            for row, r in enumerate(reqs):
                if r.stop_ids:
                    stop[row, : len(r.stop_ids)] = torch.tensor(list(r.stop_ids), dtype=torch.long)
            limit = torch.tensor([r.max_new_tokens for r in reqs], dtype=torch.long, device=dev)
            state.load(slot_idx, first, lengths, limit, stop.to(dev), params)

    # -- decode --------------------------------------------------------------------------------

    def decode(self, kv_len: int, mode: Mode) -> None:
        """One token for every live slot, attending over the first ``kv_len`` cache positions."""
        kv, state = self._held()
        if not self.use_graphs:
            self._step(kv, state, kv_len, mode)
            return
        graph = self._graphs.get((kv_len, mode))
        if graph is None:
            graph = self._capture(kv, state, kv_len, mode)
        graph.replay()

    def _step(self, kv: KVCache, s: SlotState, kv_len: int, mode: Mode) -> None:
        logits = decode(self.weights, kv, s.tokens, s.positions, kv_len)
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

    def _capture(self, kv: KVCache, s: SlotState, kv_len: int, mode: Mode) -> torch.cuda.CUDAGraph:
        saved = [t.clone() for t in s.mutable()]
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm-up outside the graph (cuBLAS workspaces, lazy inits)
                self._step(kv, s, kv_len, mode)
        torch.cuda.current_stream().wait_stream(stream)
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._pool):
            self._step(kv, s, kv_len, mode)
        for t, old in zip(s.mutable(), saved, strict=True):
            t.copy_(old)
        self._graphs[(kv_len, mode)] = graph
        return graph

    # -- results -------------------------------------------------------------------------------

    def finished(self) -> list[bool]:
        """Which slots are done (one host synchronisation)."""
        return self._held()[1].finished()

    def tokens_of(self, slots: list[int]) -> list[list[int]]:
        """The new tokens of each of ``slots``."""
        return self._held()[1].tokens_of(slots)

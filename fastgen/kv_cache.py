"""The static KV cache and the per-slot decode state: allocated once, at fixed addresses, grown on demand.

A slot is one row of the static batch. :class:`KVCache` holds every slot's keys and values,
``(layers, slots, kv_heads, positions, head_dim)``, and the RoPE tables of those positions;
:class:`SlotState` holds what the decode step reads and updates in place for each slot (its last
token, position, step, budget, stop ids, output buffer and sampling parameters). Both keep their
addresses for as long as they live, which is what lets a CUDA graph replay the step.
:class:`StaticCache` owns the pair and sizes it: ``max_seq_len`` positions when fixed, else the
longest request so far rounded up to ``kv_bucket`` (a longer call grows it, a shorter one reuses it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from fastgen.sampling import RowParams

__all__ = ["CacheGeometry", "KVCache", "SlotState", "StaticCache", "attention_length", "cache_positions"]


class CacheGeometry(Protocol):
    """What the cache needs to know about the model (``fastgen.llama.LlamaWeights`` has it)."""

    @property
    def num_layers(self) -> int: ...

    @property
    def n_kv_heads(self) -> int: ...

    @property
    def head_dim(self) -> int: ...

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def device(self) -> torch.device: ...

    @property
    def inv_freq(self) -> torch.Tensor: ...  # (head_dim / 2,) RoPE inverse frequencies

    @property
    def rope_scaling(self) -> float: ...  # the attention scaling folded into cos / sin


def cache_positions(seq_len: int, *, kv_bucket: int, max_seq_len: int | None) -> int:
    """Positions to allocate for requests needing up to ``seq_len`` (prompt + new tokens): ``max_seq_len``
    when fixed (a longer request is a :class:`ValueError`), else ``seq_len`` rounded up to ``kv_bucket``."""
    if max_seq_len is not None:
        if seq_len > max_seq_len:
            raise ValueError(f"a request needs {seq_len} positions but max_seq_len is {max_seq_len}")
        return max_seq_len
    return -(-seq_len // kv_bucket) * kv_bucket


def attention_length(top_position: int, *, cache_len: int, kv_bucket: int) -> int:
    """How much of the cache a decode step attends over: past the highest live position
    ``top_position``, rounded up to ``kv_bucket`` (one CUDA graph per bucket), at most ``cache_len``."""
    return min(cache_len, -(-(top_position + 1) // kv_bucket) * kv_bucket)


@dataclass(slots=True)
class KVCache:
    """Static keys and values, ``(layers, slots, kv_heads, seq, head_dim)``, and the RoPE tables."""

    k: torch.Tensor
    v: torch.Tensor
    cos: torch.Tensor  # (seq, head_dim), model dtype
    sin: torch.Tensor

    @property
    def seq_len(self) -> int:
        return int(self.k.shape[3])

    @property
    def slots(self) -> int:
        return int(self.k.shape[1])

    @staticmethod
    def allocate(g: CacheGeometry, slots: int, seq_len: int) -> KVCache:
        shape = (g.num_layers, slots, g.n_kv_heads, seq_len, g.head_dim)
        k = torch.zeros(shape, dtype=g.dtype, device=g.device)
        v = torch.zeros(shape, dtype=g.dtype, device=g.device)
        positions = torch.arange(seq_len, dtype=torch.float32, device=g.device)
        freqs = positions[:, None] * g.inv_freq.to(g.device)[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        cos = (emb.cos() * g.rope_scaling).to(g.dtype)
        sin = (emb.sin() * g.rope_scaling).to(g.dtype)
        return KVCache(k, v, cos, sin)


class SlotState:
    """The per-slot device state the decode step reads and updates in place (fixed addresses).

    ``out`` has ``max_new + 1`` columns: a slot's ``k``-th new token goes to column ``k``, and the last
    column takes the (ignored) writes of finished slots, so the step never branches on the host.
    """

    def __init__(self, slots: int, max_new: int, max_stop: int, device: torch.device) -> None:
        def longs(*shape: int, fill: int = 0) -> torch.Tensor:
            return torch.full(shape, fill, dtype=torch.long, device=device)

        self.tokens = longs(slots)  # the last token of each slot (the next step's input)
        self.positions = longs(slots)  # where that token goes in the cache
        self.steps = longs(slots)  # new tokens so far
        self.limit = longs(slots)  # max_new_tokens
        self.done = torch.ones(slots, dtype=torch.bool, device=device)
        self.stop = longs(slots, max_stop, fill=-1)
        self.out = longs(slots, max_new + 1)
        self.params = RowParams(
            keys=longs(slots),
            temperature=torch.ones(slots, dtype=torch.float32, device=device),
            top_p=torch.full((slots,), 2.0, dtype=torch.float32, device=device),
            sampled=torch.zeros(slots, dtype=torch.bool, device=device),
        )

    @property
    def max_new(self) -> int:
        return int(self.out.shape[1]) - 1

    def mutable(self) -> list[torch.Tensor]:
        """The tensors a decode step changes (saved and restored around a graph capture)."""
        return [self.tokens, self.positions, self.steps, self.done, self.out]

    def load(
        self,
        slots: torch.Tensor,
        first: torch.Tensor,
        lengths: torch.Tensor,
        limit: torch.Tensor,
        stop: torch.Tensor,
        params: RowParams,
    ) -> None:
        """Start ``slots`` on freshly prefilled rows: their first token ``first`` (step 1, at position
        ``lengths``), budgets, stop ids (``-1`` padded) and sampling parameters."""
        self.tokens[slots] = first
        self.positions[slots] = lengths
        self.steps[slots] = 1
        self.limit[slots] = limit
        self.stop[slots] = stop
        self.out[slots, 0] = first
        self.done[slots] = (first[:, None] == stop).any(dim=-1) | (limit <= 1)
        self.params.keys[slots] = params.keys
        self.params.temperature[slots] = params.temperature
        self.params.top_p[slots] = params.top_p
        self.params.sampled[slots] = params.sampled

    def finished(self) -> list[bool]:
        """Which slots are done (one host synchronisation)."""
        return [bool(d) for d in self.done.tolist()]

    def tokens_of(self, slots: list[int]) -> list[list[int]]:
        """The new tokens of each of ``slots``, in order."""
        idx = torch.tensor(slots, dtype=torch.long, device=self.out.device)
        counts = self.steps[idx].tolist()
        rows = self.out[idx].tolist()
        return [row[:n] for n, row in zip(counts, rows, strict=True)]


class StaticCache:
    """An engine's :class:`KVCache` and :class:`SlotState`, sized for the longest call so far."""

    def __init__(
        self, geometry: CacheGeometry, *, slots: int, max_stop_ids: int, kv_bucket: int, max_seq_len: int | None
    ) -> None:
        self.geometry = geometry
        self.slots = slots
        self.max_stop_ids = max_stop_ids
        self.kv_bucket = kv_bucket
        self.max_seq_len = max_seq_len
        self.kv: KVCache | None = None
        self.state: SlotState | None = None

    def fits(self, seq_len: int, max_new: int) -> bool:
        """Whether the tensors held now take requests of up to ``seq_len`` positions and ``max_new`` new
        tokens (a :class:`ValueError` when no cache could: past a fixed ``max_seq_len``)."""
        need = cache_positions(seq_len, kv_bucket=self.kv_bucket, max_seq_len=self.max_seq_len)
        kv, state = self.kv, self.state
        return kv is not None and state is not None and kv.seq_len >= need and state.max_new >= max_new

    def grow(self, seq_len: int) -> None:
        """Allocate for ``seq_len`` positions (never fewer than held now), at new addresses: the
        old tensors are dropped first, and graphs captured on them must be dropped too."""
        need = cache_positions(seq_len, kv_bucket=self.kv_bucket, max_seq_len=self.max_seq_len)
        seq = max(need, self.kv.seq_len if self.kv is not None else 0)
        self.release()
        self.kv = KVCache.allocate(self.geometry, self.slots, seq)
        self.state = SlotState(self.slots, seq, self.max_stop_ids, self.geometry.device)

    def release(self) -> None:
        """Drop the tensors (the next :meth:`ensure` allocates them again)."""
        self.kv = None
        self.state = None

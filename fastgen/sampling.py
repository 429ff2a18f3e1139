"""Per-row seeded token selection that runs on the device and inside a CUDA graph.

Every row carries its own temperature, top-p and 64-bit seed. A sampled row draws one uniform from a
counter-based hash of ``(seed, step)`` (``step`` = how many tokens the row has generated so far) and
picks its token by inverse CDF, so a row's tokens depend on its own logits, seed and step only: never
on the other rows of the batch, on the slot it occupies or on a global RNG. Everything is tensor
arithmetic on the logits' device (no host round trip), so the selection can be captured in a graph.

Rows with ``top_p < 1`` draw from their nucleus in descending-probability order; rows with
``top_p == 1`` draw from the full softmax in vocabulary order, whether or not another row of the
batch needed the sort. Temperature 0 is greedy (argmax).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import torch

__all__ = ["Mode", "RowParams", "mix32", "seed_keys", "uniforms", "select_tokens"]

_MASK32 = 0xFFFFFFFF
# Multipliers below 2**31 keep every product of a 32-bit value under 2**63 (no int64 overflow).
_MUL_A = 0x7FEB352D
_MUL_B = 0x2C1B3C6D
_GOLDEN = 0x9E3779B1


class Mode(enum.IntEnum):
    """What the batch needs: decided on the host from the requests, one graph per mode."""

    GREEDY = 0  # every row has temperature 0
    SAMPLE = 1  # some row samples, none with top_p < 1
    TOP_P = 2  # some row samples with top_p < 1 (a sort of the vocabulary)

    @staticmethod
    def of(temperatures: list[float], top_ps: list[float]) -> Mode:
        if not any(t > 0 for t in temperatures):
            return Mode.GREEDY
        if any(t > 0 and p < 1 for t, p in zip(temperatures, top_ps, strict=True)):
            return Mode.TOP_P
        return Mode.SAMPLE


def mix32(x: torch.Tensor) -> torch.Tensor:
    """An avalanche hash of 32-bit values held in an int64 tensor; the result is in [0, 2**32)."""
    x = x & _MASK32
    x = x ^ (x >> 16)
    x = (x * _MUL_A) & _MASK32
    x = x ^ (x >> 15)
    x = (x * _MUL_B) & _MASK32
    return x ^ (x >> 16)


def seed_keys(seeds: torch.Tensor) -> torch.Tensor:
    """One 32-bit key per row from its (up to 63-bit, non-negative) seed."""
    seeds = seeds.to(torch.int64)
    return mix32((seeds & _MASK32) ^ mix32((seeds >> 32) & _MASK32))


def uniforms(keys: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """One uniform in (0, 1) per row, a pure function of (row key, row step)."""
    h = mix32(keys ^ ((steps * _GOLDEN) & _MASK32))
    h = mix32(h ^ _GOLDEN)
    # 24 high bits -> exactly representable in float32, strictly inside (0, 1).
    return ((h >> 8).to(torch.float32) + 0.5) * (1.0 / (1 << 24))


@dataclass(slots=True)
class RowParams:
    """Per-row sampling parameters as device tensors (one entry per row)."""

    keys: torch.Tensor  # int64 hash keys of the seeds
    temperature: torch.Tensor  # float32, 1.0 where the row is greedy (never divides by 0)
    top_p: torch.Tensor  # float32, 2.0 where the row has no nucleus (a bound its mass never passes)
    sampled: torch.Tensor  # bool: temperature > 0

    @staticmethod
    def build(
        temperatures: list[float], top_ps: list[float], seeds: list[int], device: torch.device | str
    ) -> RowParams:
        return RowParams(
            keys=seed_keys(torch.tensor([s % 2**63 for s in seeds], dtype=torch.int64)).to(device),
            temperature=torch.tensor([t if t > 0 else 1.0 for t in temperatures], dtype=torch.float32, device=device),
            top_p=torch.tensor([p if p < 1 else 2.0 for p in top_ps], dtype=torch.float32, device=device),
            sampled=torch.tensor([t > 0 for t in temperatures], dtype=torch.bool, device=device),
        )


def _inverse_cdf(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    cdf = probs.cumsum(dim=-1)
    target = (u * cdf[:, -1]).unsqueeze(-1).contiguous()
    index = torch.searchsorted(cdf, target).squeeze(-1)
    return index.clamp_max(probs.shape[-1] - 1)


def select_tokens(logits: torch.Tensor, params: RowParams, steps: torch.Tensor, mode: Mode) -> torch.Tensor:
    """``(rows, vocab)`` logits -> ``(rows,)`` int64 token ids (see the module docstring)."""
    logits = logits.float()
    greedy = logits.argmax(dim=-1)
    if mode == Mode.GREEDY:
        return greedy
    probs = (logits / params.temperature[:, None]).softmax(dim=-1)
    u = uniforms(params.keys, steps)
    chosen = _inverse_cdf(probs, u)
    if mode == Mode.TOP_P:
        sorted_probs, order = probs.sort(dim=-1, descending=True, stable=True)
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
        # The most likely token always stays (its mass_before is 0).
        kept = sorted_probs.masked_fill(mass_before > params.top_p[:, None], 0.0)
        nucleus = order.gather(1, _inverse_cdf(kept, u)[:, None]).squeeze(1)
        chosen = torch.where(params.top_p < 1.5, nucleus, chosen)
    return torch.where(params.sampled, chosen, greedy)

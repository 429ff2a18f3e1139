"""Per-row seeded token selection that runs on the device and inside a CUDA graph.

Every row carries its own temperature, top-p and 64-bit seed. A sampled row draws one uniform from a
counter-based hash of ``(seed, step)`` (``step`` = how many tokens the row has generated so far) and
picks its token by inverse CDF, so a row's tokens depend on its own logits, seed and step only: never
on the other rows of the batch, on the slot it occupies or on a global RNG. Everything is tensor
arithmetic on the logits' device (no host round trip), so the selection can be captured in a graph.

Rows with ``top_p < 1`` draw from their nucleus in descending-probability order; rows with
``top_p == 1`` draw from the full softmax in vocabulary order, whether or not another row of the
batch needed the sort. Temperature 0 is greedy (argmax).

The engine calls :func:`select_tokens` inside its decode step; :class:`LogitsSampler` is the same
selection as a transformers ``generate`` logits processor (the engine's fallback, the service's ``hf``
engine, the trainer's ``generate`` path), so every path of the repository samples with one algorithm.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import torch

__all__ = [
    "LogitsSampler",
    "Mode",
    "RowParams",
    "SamplingParams",
    "mix32",
    "seed_keys",
    "select_tokens",
    "uniforms",
]

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


class SamplingParams(Protocol):
    """Anything with a row's sampling parameters (a fastgen ``Request``, the trainer's ``SamplingSpec``)."""

    @property
    def temperature(self) -> float: ...

    @property
    def top_p(self) -> float: ...

    @property
    def seed(self) -> int: ...


class LogitsSampler:
    """:func:`select_tokens` as a transformers ``generate`` logits processor, one entry per row.

    Returns scores that are ``-inf`` everywhere except each row's chosen token, so greedy decoding
    inside ``generate`` (``do_sample=False``) picks exactly that token. A row's step is the number of
    tokens ``generate`` has produced so far (the growth of ``input_ids`` since the first call), so the
    same row gives the same tokens as :class:`fastgen.Engine` would draw from the same logits. Rows
    that finished keep being fed by ``generate`` (pad tokens); their choices are ignored there. Use one
    instance per ``generate`` call.
    """

    def __init__(self, temperatures: Sequence[float], top_ps: Sequence[float], seeds: Sequence[int]) -> None:
        if not len(temperatures) == len(top_ps) == len(seeds):
            raise ValueError(
                f"LogitsSampler needs one temperature, top_p and seed per row, got "
                f"{len(temperatures)}, {len(top_ps)} and {len(seeds)}"
            )
        if not temperatures:
            raise ValueError("LogitsSampler needs at least one row")
        for t, p in zip(temperatures, top_ps, strict=True):
            if t < 0:
                raise ValueError(f"temperature must be >= 0, got {t}")
            if not 0.0 < p <= 1.0:
                raise ValueError(f"top_p must be in (0, 1], got {p}")
        self.temperatures = [float(t) for t in temperatures]
        self.top_ps = [float(p) for p in top_ps]
        self.seeds = [int(s) for s in seeds]
        self.mode = Mode.of(self.temperatures, self.top_ps)
        self._params: RowParams | None = None
        self._start: int | None = None  # input_ids length at the first call (the step-0 length)

    @classmethod
    def from_specs(cls, specs: Sequence[SamplingParams]) -> LogitsSampler:
        """One row per spec, read from its ``temperature``, ``top_p`` and ``seed``."""
        return cls([s.temperature for s in specs], [s.top_p for s in specs], [s.seed for s in specs])

    @property
    def rows(self) -> int:
        return len(self.seeds)

    def _row_params(self, device: torch.device) -> RowParams:
        if self._params is None or self._params.keys.device != device:
            self._params = RowParams.build(self.temperatures, self.top_ps, self.seeds, device)
        return self._params

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """``input_ids (rows, length)``, ``scores (rows, vocab)`` -> one-hot scores (0 at the choice, -inf elsewhere)."""
        if scores.shape[0] != self.rows:
            raise ValueError(f"LogitsSampler has {self.rows} rows but the batch has {scores.shape[0]}")
        length = int(input_ids.shape[1])
        if self._start is None:
            self._start = length
        steps = torch.full((self.rows,), length - self._start, dtype=torch.long, device=scores.device)
        chosen = select_tokens(scores, self._row_params(scores.device), steps, self.mode)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, chosen[:, None], 0.0)

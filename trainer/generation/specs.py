"""What one row is asked for and what it gives back: :class:`SamplingSpec`, :class:`Generation`,
and the per-sample seed :func:`sample_seed`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

__all__ = ["GREEDY_TEMPERATURE", "SamplingSpec", "Generation", "sample_seed"]

GREEDY_TEMPERATURE = 0.0


@dataclass(frozen=True, slots=True)
class SamplingSpec:
    """How one row is decoded: ``temperature`` 0 is greedy; otherwise nucleus sampling."""

    temperature: float = GREEDY_TEMPERATURE
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclass(frozen=True, slots=True)
class Generation:
    """One completion: its text, how many tokens it used, and whether it ended with EOS."""

    text: str
    num_tokens: int
    finished: bool


def sample_seed(seed: int, question_id: str, k: int) -> int:
    """The per-sample seed ``hash(seed, question id, k)``: stable across runs and machines."""
    digest = hashlib.sha256(f"{seed}\x1f{question_id}\x1f{k}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % (2**31 - 1)

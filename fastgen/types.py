"""What goes into the engine and what comes out."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["Request", "Completion", "EngineConfig", "EngineTimeout", "UnsupportedModel"]


@dataclass(frozen=True, slots=True)
class Request:
    """One prompt to complete: token ids in, up to ``max_new_tokens`` new ids out.

    ``temperature`` 0 is greedy; otherwise nucleus sampling with ``top_p``, drawn from the counter
    ``hash(seed, step)``. Generation stops after the first token in ``stop_ids`` (kept in the output).
    """

    prompt_ids: Sequence[int]
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop_ids: Sequence[int] = ()

    def __post_init__(self) -> None:
        if not self.prompt_ids:
            raise ValueError("a request needs at least one prompt token")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")


@dataclass(frozen=True, slots=True)
class Completion:
    """The new token ids (the stop token included when ``finished``) and whether a stop token ended it."""

    token_ids: list[int] = field(default_factory=list)
    finished: bool = False


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """How the engine decodes.

    ``slots``: rows decoded together (the static batch); ``max_seq_len``: prompt + new tokens a slot
    holds (None: sized to each call's longest request, grown when a later call needs more);
    ``cuda_graphs``: capture the decode step as CUDA graphs (GPU only; the CPU always runs eagerly);
    ``kv_bucket``: attention reads the cache up to the longest live row rounded up to this, one graph
    per length bucket; ``sync_every``: decode steps between host checks for finished rows;
    ``prefill_tokens``: padded prompt tokens per prefill forward; ``max_stop_ids``: stop ids a request
    may name.
    """

    slots: int = 64
    max_seq_len: int | None = None
    cuda_graphs: bool = True
    kv_bucket: int = 256
    sync_every: int = 16
    prefill_tokens: int = 16384
    max_stop_ids: int = 8

    def __post_init__(self) -> None:
        for name in ("slots", "kv_bucket", "sync_every", "prefill_tokens", "max_stop_ids"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_seq_len is not None and self.max_seq_len < 2:
            raise ValueError(f"max_seq_len must be >= 2, got {self.max_seq_len}")


class EngineTimeout(TimeoutError):
    """``generate`` passed its deadline (checked between decode chunks)."""


class UnsupportedModel(ValueError):
    """The model is not one the hand-written decoder reads (the fallback engine takes it)."""

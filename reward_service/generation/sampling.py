"""Per-row, seeded next-token selection for batched generation.

Each row of a batch has its own temperature, top_p and seed. A sampled row draws one uniform from a
counter-based hash of ``(seed, step)`` and picks the token by inverse CDF over its (nucleus-masked)
softmax, so a row's tokens depend only on its own logits, seed and position, never on the other
rows of the batch or on a global RNG: the same prompt and seed give the same text whatever else is
batched with it. Everything is vectorised over the batch, and the per-batch decisions (any sampled
row? any top_p < 1?) are made once on the host, so decoding never waits on the device for them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

# The counter-based hash is fastgen's (the open engine the hf backend can also decode with): one definition.
from fastgen.sampling import _GOLDEN, _MASK32, mix32, seed_keys


def row_uniforms(keys: torch.Tensor, step: int) -> torch.Tensor:
    """One uniform in (0, 1) per row, a pure function of (row key, step)."""
    h = mix32(keys ^ ((step * _GOLDEN) & _MASK32))
    h = mix32(h ^ _GOLDEN)
    # 24 high bits -> exactly representable in float32, strictly inside (0, 1).
    return ((h >> 8).to(torch.float32) + 0.5) * (1.0 / (1 << 24))


def uniform_table(keys: torch.Tensor, steps: int) -> torch.Tensor:
    """``(steps, batch)`` uniforms: row ``s`` is :func:`row_uniforms` at step ``s``."""
    step_terms = (torch.arange(steps, dtype=torch.int64, device=keys.device) * _GOLDEN) & _MASK32
    h = mix32(keys[None, :] ^ step_terms[:, None])
    h = mix32(h ^ _GOLDEN)
    return ((h >> 8).to(torch.float32) + 0.5) * (1.0 / (1 << 24))


def _inverse_cdf(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    cdf = probs.cumsum(dim=-1)
    target = (u * cdf[:, -1]).unsqueeze(-1)
    index = torch.searchsorted(cdf, target).squeeze(-1)
    return index.clamp_max(probs.shape[-1] - 1)


class RowSampler:
    """Chooses the next token of every row of one batch (fixed rows, any number of steps)."""

    def __init__(
        self,
        temperatures: Sequence[float],
        top_ps: Sequence[float],
        seeds: Sequence[int],
        device: torch.device | str = "cpu",
        max_steps: int = 0,
    ) -> None:
        """``max_steps``: the uniforms of steps below it are computed once, up front, on the host
        (one small copy to the device instead of ~20 tiny hash kernels per step)."""
        if not len(temperatures) == len(top_ps) == len(seeds):
            raise ValueError("temperatures, top_ps and seeds must have one entry per row")
        self.any_sampled = any(t > 0 for t in temperatures)
        self.all_sampled = all(t > 0 for t in temperatures)
        self.any_top_p = any(t > 0 and p < 1 for t, p in zip(temperatures, top_ps))
        self.temperature = torch.tensor([t if t > 0 else 1.0 for t in temperatures], dtype=torch.float32, device=device)
        self.sampled_rows = torch.tensor([t > 0 for t in temperatures], dtype=torch.bool, device=device)
        # Rows without a nucleus get a threshold their mass can never exceed (no per-row mask op).
        self.top_p = torch.tensor([p if p < 1 else 2.0 for p in top_ps], dtype=torch.float32, device=device)
        host_keys = seed_keys(torch.tensor([s % 2**63 for s in seeds], dtype=torch.int64))
        self.keys = host_keys.to(device)
        self.table = uniform_table(host_keys, max_steps).to(device) if self.any_sampled and max_steps > 0 else None

    def __call__(self, logits: torch.Tensor, step: int) -> torch.Tensor:
        """``(batch, vocab)`` logits at decoding ``step`` -> ``(batch,)`` int64 token ids.

        Rows with temperature 0 take the argmax; the others sample from
        ``softmax(logits / temperature)`` restricted to their top_p nucleus.
        """
        logits = logits.float()
        if not self.any_sampled:
            return logits.argmax(dim=-1)
        probs = (logits / self.temperature[:, None]).softmax(dim=-1)
        if self.any_top_p:
            # The nucleus is found in sorted order, but the draw is always made in vocabulary order,
            # so a row samples the same token whether or not its batch needed the sort.
            sorted_probs, order = probs.sort(dim=-1, descending=True, stable=True)
            mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs
            # The most likely token always stays (its mass_before is 0).
            kept = sorted_probs.masked_fill(mass_before > self.top_p[:, None], 0.0)
            probs = torch.empty_like(probs).scatter_(-1, order, kept)
        u = self.table[step] if self.table is not None and step < self.table.shape[0] else row_uniforms(self.keys, step)
        sampled = _inverse_cdf(probs, u)
        if self.all_sampled:
            return sampled
        return torch.where(self.sampled_rows, sampled, logits.argmax(dim=-1))

"""Per-row, seeded next-token selection for batched generation.

Each row of a batch has its own temperature, top_p and seed. Sampling uses the Gumbel-max trick
with noise from a counter-based hash of ``(seed, step, token id)``, so a row's tokens depend only on
its own logits, seed and position, never on the other rows of the batch or on a global RNG: the
same prompt and seed give the same text whatever else is batched with it. Everything is
vectorised over the batch (one pass of elementwise ops; one sort when some row uses top_p < 1).
"""

from __future__ import annotations

import torch

_MASK32 = 0xFFFFFFFF
# Multipliers below 2**31 keep every product of a 32-bit value under 2**63 (no int64 overflow).
_MUL_A = 0x7FEB352D
_MUL_B = 0x2C1B3C6D
_GOLDEN = 0x9E3779B1
_TOKEN_SALT = 0x632BE5AB


def mix32(x: torch.Tensor) -> torch.Tensor:
    """An avalanche hash of 32-bit values held in an int64 tensor; the result is in [0, 2**32)."""
    x = x & _MASK32
    x = x ^ (x >> 16)
    x = (x * _MUL_A) & _MASK32
    x = x ^ (x >> 15)
    x = (x * _MUL_B) & _MASK32
    return x ^ (x >> 16)


def row_keys(seeds: torch.Tensor, step: int) -> torch.Tensor:
    """One 32-bit key per row from its 64-bit seed and the decoding step."""
    seeds = seeds.to(torch.int64)
    folded = (seeds & _MASK32) ^ mix32((seeds >> 32) & _MASK32)
    step_term = (step * _GOLDEN) & _MASK32
    return mix32(mix32(folded) ^ step_term)


def uniforms(seeds: torch.Tensor, step: int, vocab_size: int) -> torch.Tensor:
    """``(batch, vocab)`` uniforms in (0, 1), a pure function of (seed, step, token id)."""
    tokens = torch.arange(vocab_size, device=seeds.device, dtype=torch.int64)
    token_keys = mix32(tokens ^ _TOKEN_SALT)
    h = mix32(row_keys(seeds, step)[:, None] ^ token_keys[None, :])
    # 24 high bits -> exactly representable float32, strictly inside (0, 1).
    return ((h >> 8).to(torch.float32) + 0.5) * (1.0 / (1 << 24))


def top_p_mask(scaled_logits: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """True for tokens outside each row's nucleus (smallest set with mass >= top_p)."""
    sorted_logits, order = scaled_logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs
    remove_sorted = mass_before > top_p[:, None].to(probs.dtype)
    remove_sorted[:, 0] = False  # the most likely token always stays
    return torch.zeros_like(remove_sorted).scatter(-1, order, remove_sorted)


def select_next_tokens(
    logits: torch.Tensor,
    temperature: torch.Tensor,
    top_p: torch.Tensor,
    seeds: torch.Tensor,
    step: int,
) -> torch.Tensor:
    """Next token of every row: argmax where temperature is 0, else a seeded top-p sample.

    ``logits`` is ``(batch, vocab)``; ``temperature``, ``top_p`` (float) and ``seeds`` (int64) are
    ``(batch,)`` on the same device. Returns ``(batch,)`` int64 token ids.
    """
    logits = logits.float()
    greedy = logits.argmax(dim=-1)
    sampled_rows = temperature > 0
    if not bool(sampled_rows.any()):
        return greedy
    scaled = logits / temperature.clamp_min(1e-6)[:, None].to(logits.dtype)
    if bool((top_p < 1).any()):
        scaled = scaled.masked_fill(top_p_mask(scaled, top_p), float("-inf"))
    gumbel = -torch.log(-torch.log(uniforms(seeds, step, logits.shape[-1])))
    sampled = (scaled + gumbel).argmax(dim=-1)
    return torch.where(sampled_rows, sampled, greedy)

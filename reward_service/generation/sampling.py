"""The ``hf`` engine's per-row token choice: fastgen's one sampler, after the arm's banned tokens.

Each row of a batch has its own temperature, top_p and seed; the choice is
:class:`fastgen.sampling.LogitsSampler` (a counter-based hash of ``(seed, step)``, inverse CDF over the
row's softmax or its top-p nucleus, argmax at temperature 0), so a row's tokens depend only on its own
logits, seed and step, never on the other rows of the batch, and the ``hf`` and ``fast`` engines draw
alike. This module only adds what the service needs on top: ids that may never be chosen (the eos ids
when ``ignore_eos`` decodes every row to its budget).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from fastgen.sampling import LogitsSampler

__all__ = ["RowSampler"]


class RowSampler:
    """A transformers ``generate`` logits processor for one batch of arm prompts (fixed rows).

    Scores of ``banned`` ids are set to ``-inf``, then :class:`~fastgen.sampling.LogitsSampler`
    picks each row's token and returns scores whose argmax is that token.
    """

    def __init__(
        self,
        temperatures: Sequence[float],
        top_ps: Sequence[float],
        seeds: Sequence[int],
        banned: Sequence[int] = (),
    ) -> None:
        self.sampler = LogitsSampler(temperatures, top_ps, seeds)
        self.banned = tuple(int(b) for b in banned)
        self._banned_ids: torch.Tensor | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """``input_ids (rows, length)``, ``scores (rows, vocab)`` -> one-hot scores of the chosen tokens."""
        if self.banned:
            if self._banned_ids is None or self._banned_ids.device != scores.device:
                self._banned_ids = torch.tensor(self.banned, dtype=torch.long, device=scores.device)
            scores = scores.index_fill(1, self._banned_ids, float("-inf"))
        return self.sampler(input_ids, scores)

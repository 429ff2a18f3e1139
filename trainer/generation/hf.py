"""``generation_engine: hf`` for rollouts and eval: transformers ``generate`` with a per-row sampler.

Each row has its own :class:`~trainer.generation.SamplingSpec` (temperature, top-p, seed): tokens are
chosen by :class:`fastgen.LogitsSampler`, the repository's one sampler as a logits processor (a draw
from ``hash(seed, step)`` per row, handed to ``generate`` as a one-hot choice), so a row's sample
depends on its seed, not on which other prompts share its batch, and ``hf`` draws as ``fast`` does.
``temperature == 0`` means greedy decoding for that row.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from trainer.generation.specs import Generation, SamplingSpec
from trainer.generation.tokens import strip_duplicate_bos, to_generation

__all__ = ["generate_hf"]


def generate_hf(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    specs: Sequence[SamplingSpec],
    max_new_tokens: int,
    batch_size: int,
    on_batch: Callable[[int], None] | None,
    eos_ids: list[int],
) -> list[Generation]:
    """One completion per prompt, ``batch_size`` rows per ``generate`` call (prompts grouped by length
    to waste little padding; ``on_batch(n)`` after each batch), in the order of ``prompts``."""
    from transformers import GenerationConfig, LogitsProcessorList

    from fastgen import LogitsSampler

    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        num_beams=1,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=eos_ids,
    )
    texts = [strip_duplicate_bos(p, tokenizer) for p in prompts]
    lengths = [len(t) for t in texts]
    order = sorted(range(len(texts)), key=lambda i: -lengths[i])
    results: list[Generation | None] = [None] * len(texts)
    device = next(model.parameters()).device
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            enc = tokenizer([texts[i] for i in rows], return_tensors="pt", padding=True)
            enc = {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
            sampler = LogitsSampler.from_specs([specs[i] for i in rows])
            out = model.generate(**enc, generation_config=config, logits_processor=LogitsProcessorList([sampler]))
            new_tokens = out[:, enc["input_ids"].shape[1] :].tolist()
            for row, ids in zip(rows, new_tokens, strict=True):
                results[row] = to_generation(ids, tokenizer, eos_ids)
            if on_batch is not None:
                on_batch(len(rows))
    finally:
        tokenizer.padding_side = old_side
    return [r for r in results if r is not None]

"""Token-level helpers every engine shares: the stop ids, the prompt's BOS, a completion's cut."""

from __future__ import annotations

from typing import Any

from trainer.generation.specs import Generation

__all__ = ["end_of_turn_id", "stop_token_ids", "strip_duplicate_bos", "to_generation"]


def strip_duplicate_bos(prompt: str, tokenizer: Any) -> str:
    """Drop a leading BOS *text* when the tokenizer adds its own BOS token on encoding.

    Chat templates such as DeepSeek-R1's start with ``bos_token``; encoding that string with the
    default ``add_special_tokens=True`` would put BOS in twice.
    """
    bos = getattr(tokenizer, "bos_token", None)
    bos_id = getattr(tokenizer, "bos_token_id", None)
    if not bos or bos_id is None or not prompt.startswith(bos):
        return prompt
    probe = tokenizer("x")["input_ids"]
    if probe and probe[0] == bos_id:
        return prompt[len(bos) :]
    return prompt


def end_of_turn_id(tokenizer: Any) -> int | None:
    """The token id of the chat template's end-of-turn text (``trainer.prompts.end_of_turn``) when it
    is one token, else None."""
    from trainer.prompts import end_of_turn

    text = end_of_turn(tokenizer)
    if not text:
        return None
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return int(ids[0]) if len(ids) == 1 else None


def stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every id generation stops on: the model's generation-config EOS ids, the tokenizer's EOS and
    the chat template's end-of-turn token (Llama 3's ``<|eot_id|>``, ChatML's ``<|im_end|>``: a chat
    model closes its turn with it, which is not always its EOS)."""
    ids: list[int] = []
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (configured, tokenizer.eos_token_id, end_of_turn_id(tokenizer)):
        if value is None:
            continue
        for i in value if isinstance(value, (list, tuple)) else [value]:
            if i not in ids:
                ids.append(int(i))
    if not ids:
        raise ValueError("the tokenizer has no eos_token_id: generation could not stop")
    return ids


def to_generation(ids: list[int], tokenizer: Any, eos_ids: list[int]) -> Generation:
    """Cut a generated row at its first EOS (kept in the count) and decode it.

    Rows that stop early are padded after their EOS; a row without EOS ran the whole budget.
    """
    finished = False
    kept: list[int] = []
    for t in ids:
        if t in eos_ids:
            finished = True
            kept.append(t)
            break
        kept.append(t)
    text = tokenizer.decode(kept, skip_special_tokens=True)
    return Generation(text=text, num_tokens=len(kept), finished=finished)

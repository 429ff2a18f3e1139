"""How RL frameworks hand over a sample, read back into Regime W's terms (question, response, gold).

OpenRLHF gives a reward the chat-templated prompt and ``query`` = prompt + response decoded with its
special tokens; verl gives the response alone and the question in ``extra_info``. Both the service's
``/get_reward`` and the trainer's framework integrations read them with these functions, so the
question they send is the raw data set's question (the one whose arms were precomputed):

- ``question_from_prompt``: the last user turn of a Llama-3, DeepSeek-R1, ChatML/Qwen, Mistral,
  Phi-3 or Gemma chat template (or the trainer's plain ``Question: ...\\nAnswer:``), with the trainer's
  instruction suffix removed;
- ``response_from_query``: ``query`` minus its prompt, without trailing end-of-turn / padding tokens;
- ``normalize_label``: ``""`` / ``None`` -> label-free (``None``), numbers -> their text, a whole
  GSM8K solution -> its ``#### N`` value; a label with no readable answer -> ``ValueError``.

Pure functions over strings (precompiled, non-backtracking patterns); no framework is imported.
"""

from __future__ import annotations

import re

from shared_schemas.answer import gold_answer

__all__ = [
    "INSTRUCTION_SUFFIXES",
    "MAX_LABEL_CHARS",
    "has_lone_surrogate",
    "question_from_prompt",
    "strip_instruction",
    "response_from_query",
    "normalize_label",
]

#: The instruction the open trainer appends to every question (``trainer.prompts.INSTRUCTION``;
#: a test keeps the two equal).
INSTRUCTION_SUFFIXES: tuple[str, ...] = ("Please reason step by step, and put your final answer within \\boxed{}.",)

#: A label longer than this is reduced to its answer (the wire's ``gold_answer`` limit).
MAX_LABEL_CHARS = 1024

# The last user turn of each template family; the match that ends last in the prompt wins.
_USER_TURNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"<\|start_header_id\|>user<\|end_header_id\|>\s*(.*?)<\|eot_id\|>", re.S),  # Llama-3
    re.compile(r"<｜User｜>(.*?)(?=<｜Assistant｜>|<｜User｜>|<｜end▁of▁sentence｜>|\Z)", re.S),  # DeepSeek-R1/V3
    re.compile(r"<\|im_start\|>user[ \t]*\n(.*?)(?:<\|im_end\|>|\Z)", re.S),  # ChatML / Qwen
    re.compile(r"\[INST\](.*?)\[/INST\]", re.S),  # Mistral / Llama-2
    re.compile(r"<\|user\|>\s*(.*?)(?:<\|end\|>|</s>|<\|assistant\|>|\Z)", re.S),  # Phi-3 / Zephyr
    re.compile(r"<start_of_turn>user[ \t]*\n(.*?)(?:<end_of_turn>|\Z)", re.S),  # Gemma
    re.compile(r"\AQuestion:\s*(.*?)\s*\nAnswer:\s*\Z", re.S),  # the trainer's plain prompt
)

# Tokens a decoded query may end with after the response (skip_special_tokens=False).
_END_TOKENS = (
    "<|eot_id|>",
    "<|end_of_text|>",
    "<|finetune_right_pad_id|>",
    "<|im_end|>",
    "<|endoftext|>",
    "<｜end▁of▁sentence｜>",
    "<|end|>",
    "</s>",
    "<end_of_turn>",
    "<eos>",
    "<pad>",
    "<|eos|>",
)


def has_lone_surrogate(text: str) -> bool:
    """True when ``text`` holds a lone UTF-16 surrogate (JSON allows ``"\\ud800"``; UTF-8 does not)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def strip_instruction(text: str) -> str:
    """``text`` without a trailing instruction of the trainer's (and surrounding blanks)."""
    out = text.strip()
    for suffix in INSTRUCTION_SUFFIXES:
        if out.endswith(suffix):
            out = out[: -len(suffix)].strip()
    return out


def question_from_prompt(prompt: str) -> str:
    """The question a (possibly chat-templated) prompt asks: its last user turn, instruction removed."""
    best: re.Match[str] | None = None
    for pattern in _USER_TURNS:
        last = None
        for found in pattern.finditer(prompt):
            last = found
        if last is not None and (best is None or last.end() > best.end()):
            best = last
    return strip_instruction(best.group(1) if best is not None else prompt)


def response_from_query(query: str, prompt: str) -> str:
    """The response part of ``query`` (= prompt + response), without trailing end/pad tokens."""
    if query.startswith(prompt):
        response = query[len(prompt) :]
    else:
        stripped = prompt.strip()
        at = query.rfind(stripped) if stripped else -1
        response = query[at + len(stripped) :] if at != -1 else query
    changed = True
    while changed:
        changed = False
        trimmed = response.rstrip()
        for token in _END_TOKENS:
            if trimmed.endswith(token):
                response = trimmed[: -len(token)]
                changed = True
                break
    return response


def normalize_label(label: str | int | float | None, where: str = "label") -> str | None:
    """``None`` (label-free) for a missing or blank label; else the gold answer as text.

    Numbers become their text (``72``, ``2.5``); a label longer than ``MAX_LABEL_CHARS`` (a whole
    GSM8K solution) is reduced to its ``#### N`` value. A label with no readable answer, a boolean or
    a lone surrogate is a ``ValueError`` naming ``where``.
    """
    if label is None:
        return None
    if isinstance(label, bool):  # bool is an int subclass: refuse it rather than read True as 1
        raise ValueError(f"{where}: a boolean is not an answer")
    if isinstance(label, int):
        return str(label)
    if isinstance(label, float):
        return str(int(label)) if label.is_integer() else repr(label)
    if not isinstance(label, str):
        raise ValueError(f"{where}: must be a string, a number or null, got {type(label).__name__}")
    text = label.strip()
    if not text:
        return None
    if has_lone_surrogate(text):
        raise ValueError(f"{where}: holds a lone UTF-16 surrogate (not valid Unicode text)")
    value = gold_answer(text)
    if value is None:
        raise ValueError(f"{where}: {text[:60]!r} holds no answer (expected '#### 72', '72', a number or '')")
    return text if len(text) <= MAX_LABEL_CHARS else value

"""THE prompt: SFT, rollouts, GRPO and evaluation all build their prompts here.

DeepSeek-R1's usage recommendation for math: no system prompt; the user turn is the question
followed by "Please reason step by step, and put your final answer within \\boxed{}.".

``build_prompt`` returns text meant to be tokenized with the tokenizer's default
``add_special_tokens=True`` (what TRL's SFT/DPO/GRPO do with string prompts): when the chat
template writes the BOS token itself and the tokenizer would add it again, the template's copy is
removed, so the model sees exactly one BOS.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = [
    "INSTRUCTION",
    "PLAIN_TEMPLATE",
    "build_messages",
    "build_prompt",
    "completion_separator",
    "end_of_turn",
    "format_target",
    "opens_think",
]

INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
PLAIN_TEMPLATE = "Question: {question}\nAnswer:"

_CALCULATOR_ANNOTATION = re.compile(r"<<[^<>]*>>")
_TURN_PROBE = "\u2063regime-w-turn-probe\u2063"


def build_messages(question: str) -> list[dict[str, str]]:
    """The chat messages for ``question``: one user turn, no system prompt."""
    return [{"role": "user", "content": f"{question.strip()}\n{INSTRUCTION}"}]


def _adds_bos(tokenizer: Any) -> bool:
    bos_id = getattr(tokenizer, "bos_token_id", None)
    if bos_id is None:
        return False
    ids = tokenizer("x")["input_ids"]
    return bool(ids) and ids[0] == bos_id


def build_prompt(question: str, tokenizer: Any) -> str:
    """The prompt text for ``question``: the chat template with the generation prompt when the
    tokenizer has one, else ``"Question: {question}\\nAnswer:"``."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(build_messages(question), tokenize=False, add_generation_prompt=True)
        bos = getattr(tokenizer, "bos_token", None)
        if bos and text.startswith(bos) and _adds_bos(tokenizer):
            text = text[len(bos) :]
        return text
    return PLAIN_TEMPLATE.format(question=question.strip())


def format_target(solution: str, *, close_think: bool = False) -> str:
    """A GSM8K solution as an SFT target: ``<<a*b=c>>`` calculator annotations removed, the
    ``#### N`` last line kept. With ``close_think`` (the prompt opened a ``<think>`` block, as
    DeepSeek-R1's template does) the reasoning is closed with ``</think>`` before the answer line,
    so the model learns R1's shape: reasoning, ``</think>``, final answer."""
    text = _CALCULATOR_ANNOTATION.sub("", solution)
    lines = [line.rstrip() for line in text.strip().splitlines()]
    if close_think and lines and lines[-1].lstrip().startswith("####"):
        return "\n".join(lines[:-1]) + "\n</think>\n\n" + lines[-1].strip()
    return "\n".join(lines)


def opens_think(prompt: str) -> bool:
    """True when the prompt ends inside an open ``<think>`` block (DeepSeek-R1's generation prompt)."""
    return prompt.rstrip().endswith("<think>")


def completion_separator(tokenizer: Any) -> str:
    """What goes between ``build_prompt`` and a completion: nothing after a chat template's
    generation prompt, one space after the plain ``Answer:``."""
    return "" if getattr(tokenizer, "chat_template", None) else " "


def end_of_turn(tokenizer: Any) -> str:
    """The text the chat template writes right after an assistant turn's content, trailing whitespace
    dropped: ChatML's ``<|im_end|>``, DeepSeek-R1's ``<｜end▁of▁sentence｜>``, Llama 3's ``<|eot_id|>``.

    An SFT target ends with it, so the model learns to close its turn the way its template does (not
    with a bare EOS that the template never writes there), and generation stops on it. Without a chat
    template (or when the template writes nothing after the content) it is the EOS token, or ``""``.
    """
    eos = getattr(tokenizer, "eos_token", None) or ""
    if not getattr(tokenizer, "chat_template", None):
        return eos
    messages = [*build_messages("1 + 1?"), {"role": "assistant", "content": _TURN_PROBE}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception:  # jinja TemplateError and friends: a template that refuses this conversation
        return eos
    if not isinstance(text, str) or _TURN_PROBE not in text:
        return eos
    return text[text.rindex(_TURN_PROBE) + len(_TURN_PROBE) :].strip() or eos

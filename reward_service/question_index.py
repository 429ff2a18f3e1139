"""Find the known question a wrapped prompt asks, so a templated prompt reuses precomputed arms.

Arms are cached per exact question text. A client that sends the question wrapped in a chat
template, with one of the usual instructions appended, or with other whitespace would miss the
cache and cost a full arm generation. ``QuestionIndex`` holds the questions whose arms are cached
(for one model and one config fingerprint) and answers: which known question does this text ask?

A text resolves to a known question ``Q`` only when, with its whitespace collapsed (``normalize``),
it IS ``Q`` with nothing around it but *scaffolding*: the chat-template tokens and headers and the
known instruction sentences of ``SCAFFOLDING`` (the one allow-list, below). Anything else around
``Q`` — another instruction ("Give the answer in dozens."), a second question, a few-shot example,
a prefix that changes its meaning, a digit, a sign or a decimal point glued to its first number —
leaves the text unresolved, and it is scored as sent (arms generated for it): a reward computed
against another question's arms is worse than a cache miss.

How: strip the scaffolding pieces off both ends of the normalized text (the start piece by piece,
the end as the chain of pieces that reaches it) and look the rest up in a dict, exactly. A second
lookup strips the template pieces only, so a question cached with its instruction included is found
inside a template too. Two regex passes and two dict probes: linear in the text's length whatever
the indexed questions look like, and never a partial-text match (numbers match whole).

The index is bounded (``max_questions``, ``max_chars`` of normalized text: a client's precompute
requests must not grow it without end). A question past the bound is still served exactly as sent
(the arm cache's own key); only its wrapped forms are not resolved. Each one left out is counted in
``dropped`` and logged (the first, then at every power of two). Thread-safe (one lock for writes).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from shared_schemas.rl_frameworks import INSTRUCTION_SUFFIXES

__all__ = [
    "INSTRUCTIONS",
    "IndexBounds",
    "Match",
    "QuestionIndex",
    "SCAFFOLDING",
    "TEMPLATE_PIECES",
    "normalize",
    "strip_scaffolding",
]

log = logging.getLogger("reward_service.question_index")

_WHITESPACE = re.compile(r"\s+")


def normalize(text: str) -> str:
    """``text`` with every run of whitespace collapsed to one space and the ends stripped."""
    return _WHITESPACE.sub(" ", text).strip()


# --- the allow-list: what may stand around a known question -------------------------------------

_ROLE = r"(?:system|user|assistant)(?!\w)"

#: Chat-template scaffolding (regular expressions over normalized text): the special tokens and role
#: headers of the Llama-3, ChatML/Qwen, DeepSeek-R1, Mistral/Llama-2, Phi-3/Zephyr and Gemma templates
#: (the ones ``shared_schemas.rl_frameworks`` reads), Llama-3.1's date header, and the labels of plain
#: prompts (the trainer's ``Question: ...\nAnswer:``).
TEMPLATE_PIECES: tuple[str, ...] = (
    r"<\|begin_of_text\|>",
    rf"<\|start_header_id\|>{_ROLE}<\|end_header_id\|>",
    r"<\|eot_id\|>",
    rf"<\|im_start\|>(?:{_ROLE})?",
    r"<\|im_end\|>",
    r"<\|endoftext\|>",
    r"<｜begin▁of▁sentence｜>",
    r"<｜(?:User|Assistant)｜>",
    r"<｜end▁of▁sentence｜>",
    r"</?think>",
    r"</?s>",
    r"\[/?INST\]",
    r"<\|(?:system|user|assistant|end)\|>",
    r"<bos>",
    r"<start_of_turn>(?:user|model)(?!\w)",
    r"<end_of_turn>",
    r"Cutting Knowledge Date: [A-Z][a-z]{2,8} \d{4}(?!\d)",
    r"Today Date: \d{1,2} [A-Z][a-z]{2} \d{4}(?!\d)",
    r"(?:Question|Problem|Solve(?: this)?|Answer|Solution):",
)

#: Known instruction sentences (literal text): the open trainer's, verl's GSM8K instruction, the
#: zero-shot chain-of-thought cue, and the default system prompts of common chat models.
INSTRUCTIONS: tuple[str, ...] = (
    *INSTRUCTION_SUFFIXES,
    'Let\'s think step by step and output the final answer after "####".',
    "Let's think step by step.",
    "You are a helpful assistant.",
    "You are Qwen, created by Alibaba Cloud. You are a helpful assistant.",
)


# The characters a piece may start with (a cheap test before the alternation, at every position).
_TEMPLATE_FIRST = "<[CTQPSA"


def _alternation(patterns: Iterable[str], first: str) -> re.Pattern[str]:
    return re.compile(f"(?=[{re.escape(first)}])(?:" + "|".join(f"(?:{p})" for p in patterns) + ")")


_TEMPLATE = _alternation(TEMPLATE_PIECES, _TEMPLATE_FIRST)
# longest literal first: "Let's think step by step and ..." before "Let's think step by step."
_INSTRUCTION_TEXTS = tuple(sorted((normalize(s) for s in INSTRUCTIONS), key=len, reverse=True))
#: Every piece of scaffolding: template pieces and instruction sentences.
SCAFFOLDING = _alternation(
    (*TEMPLATE_PIECES, *map(re.escape, _INSTRUCTION_TEXTS)),
    "".join(sorted(set(_TEMPLATE_FIRST) | {s[0] for s in _INSTRUCTION_TEXTS})),
)


def strip_scaffolding(norm: str, pieces: re.Pattern[str] = SCAFFOLDING) -> str:
    """``norm`` (normalized) without the ``pieces`` at its start and the chain of them at its end.

    Linear in ``len(norm)``: the start is consumed piece by piece with anchored matches; the end is
    the run of non-overlapping matches (one ``finditer`` pass) that are adjacent, a space apart at
    most, and reach the end of the text.
    """
    n = len(norm)
    start = 0
    while True:
        if start < n and norm[start] == " ":
            start += 1
        m = pieces.match(norm, start)
        if m is None or m.end() == start:
            break
        start = m.end()
    end = n
    spans = [(m.start(), m.end()) for m in pieces.finditer(norm, start)]
    for lo, hi in reversed(spans):
        if hi == end or (hi == end - 1 and norm[hi] == " "):
            end = lo
        else:
            break
    return norm[start:end].strip(" ")


@dataclass(frozen=True)
class Match:
    """What ``QuestionIndex.find`` found: the known question (as cached) and how: ``"exact"`` (equal
    once whitespace is normalized) or ``"contained"`` (inside scaffolding: a template, an instruction).
    ``question`` is None only in matches built by older callers; ``find`` never returns such a match."""

    question: str | None
    how: str


@dataclass(frozen=True)
class IndexBounds:
    """How much the index holds: questions, and characters of question text (normalized + as cached when
    they differ). A question that would pass either bound is left out."""

    max_questions: int = 1_000_000
    max_chars: int = 128 * 1024 * 1024


class QuestionIndex:
    """The known questions of one model and config, findable inside scaffolding (module docstring)."""

    def __init__(self, bounds: IndexBounds = IndexBounds()) -> None:
        self.bounds = bounds
        self._lock = threading.Lock()
        self._by_normal: dict[str, str] = {}  # normalized -> the question as cached
        self._chars = 0  # characters of question text held
        self.dropped = 0  # questions left out: the index was full

    def __len__(self) -> int:
        return len(self._by_normal)

    def __contains__(self, question: str) -> bool:
        return normalize(question) in self._by_normal

    @property
    def chars(self) -> int:
        """Characters of question text held, normalized and as cached (what ``bounds.max_chars`` bounds)."""
        return self._chars

    def add(self, question: str) -> bool:
        """Index ``question`` (as cached); False when it is empty, already known, or the index is full."""
        norm = normalize(question)
        if not norm:
            return False
        with self._lock:
            if norm in self._by_normal:
                return False
            size = len(norm) if question == norm else len(norm) + len(question)
            if len(self._by_normal) >= self.bounds.max_questions or self._chars + size > self.bounds.max_chars:
                self.dropped += 1
                if self.dropped & (self.dropped - 1) == 0:  # the first drop, then at every power of two
                    log.warning(
                        "question index full (%d questions, %d characters; bounds %d, %d): %d question(s) "
                        "not indexed; they are served when sent exactly, their wrapped forms are generated anew",
                        len(self._by_normal),
                        self._chars,
                        self.bounds.max_questions,
                        self.bounds.max_chars,
                        self.dropped,
                    )
                return False
            self._by_normal[norm] = norm if question == norm else question  # one string when they are equal
            self._chars += size
            return True

    def unknown(self, questions: Iterable[str]) -> list[str]:
        """The questions ``add`` would index (not empty, not yet known), each once."""
        out: dict[str, None] = {}
        for question in questions:
            norm = normalize(question)
            if norm and norm not in self._by_normal:
                out[question] = None
        return list(out)

    def add_many(self, questions: Iterable[str]) -> int:
        """Index every question; returns how many were new."""
        return sum(self.add(q) for q in questions)

    def find(self, text: str) -> Match | None:
        """The known question ``text`` is (whitespace aside) or asks inside scaffolding; None when none."""
        norm = normalize(text)
        known = self._by_normal
        exact = known.get(norm)
        if exact is not None:
            return Match(exact, "exact")
        if not known:
            return None
        for pieces in (SCAFFOLDING, _TEMPLATE):  # all scaffolding; then templates only (instruction cached)
            core = strip_scaffolding(norm, pieces)
            if core and core != norm:
                found = known.get(core)
                if found is not None:
                    return Match(found, "contained")
        return None

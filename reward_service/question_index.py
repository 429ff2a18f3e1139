"""Find the known question inside a wrapped one, so a templated prompt reuses precomputed arms.

Arms are cached per exact question text. A client that sends the question wrapped in a chat
template, with an instruction appended, or with other whitespace would miss the cache and cost a
full arm generation. ``QuestionIndex`` holds the questions whose arms are cached (for one model and
one config fingerprint) and answers: which known question does this text contain?

- Texts are compared with their whitespace collapsed (``normalize``: every run of whitespace is one
  space, the ends stripped).
- Only known questions of at least ``min_chars`` normalized characters are indexed: a short one
  (``"How many?"``) would be found inside unrelated prompts.
- A match must start and end on a word boundary (no letter or digit glued on either side), so a
  known question is never found inside a longer, different one that merely shares its text.
- The longest match wins. When the text also holds another known question that does not overlap
  the longest (a few-shot prompt whose examples are known questions), the answer is ambiguous
  (``Match(None, "ambiguous")``): generating arms for the text as sent is better than scoring against the
  wrong question's arms.

Cost: each known question is filed under its first ``min_chars`` normalized characters; ``find``
slides over the text once (one dictionary probe per position) and compares only the questions of a
matching prefix, so a lookup is linear in the text's length and independent of how many questions
are indexed (a bucket of questions sharing a prefix is scanned whole; ``max_bucket`` bounds it).
The index is bounded in entries (``max_questions``); past it, new questions are not indexed.
Thread-safe (one lock).
"""

from __future__ import annotations

import bisect
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = ["MIN_QUESTION_CHARS", "Match", "QuestionIndex", "normalize"]

#: Known questions shorter than this (normalized) are never matched inside another text.
MIN_QUESTION_CHARS = 20

_WHITESPACE = re.compile(r"\s+")


def normalize(text: str) -> str:
    """``text`` with every run of whitespace collapsed to one space and the ends stripped."""
    return _WHITESPACE.sub(" ", text).strip()


def _longest_first(question: str) -> int:
    return -len(question)


def _glued(text: str, at: int) -> bool:
    """True when the characters on both sides of position ``at`` are letters or digits."""
    return 0 < at < len(text) and text[at - 1].isalnum() and text[at].isalnum()


@dataclass(frozen=True)
class Match:
    """What ``QuestionIndex.find`` found: the known question (as cached) and how; ``question`` is None
    when ``how`` is ``"ambiguous"`` (several known questions side by side in the text)."""

    question: str | None
    how: str  # "exact" (equal once whitespace is normalized), "contained" or "ambiguous"


class QuestionIndex:
    """The known questions of one model and config, findable inside a longer text (module docstring)."""

    def __init__(self, min_chars: int = MIN_QUESTION_CHARS, max_questions: int = 500_000, max_bucket: int = 4096):
        if min_chars < 1:
            raise ValueError("min_chars must be >= 1")
        self.min_chars = min_chars
        self.max_questions = max_questions
        self.max_bucket = max_bucket
        self._lock = threading.Lock()
        self._by_normal: dict[str, str] = {}  # normalized -> the question as cached
        self._by_prefix: dict[str, list[str]] = {}  # first min_chars chars -> normalized questions, longest first
        self.dropped = 0  # questions not indexed: index full, or their prefix bucket full

    def __len__(self) -> int:
        return len(self._by_normal)

    def __contains__(self, question: str) -> bool:
        return normalize(question) in self._by_normal

    def add(self, question: str) -> bool:
        """Index ``question`` (as cached); False when it is too short, already known, or the index is full."""
        norm = normalize(question)
        if len(norm) < self.min_chars:
            return False
        with self._lock:
            if norm in self._by_normal:
                return False
            bucket = self._by_prefix.get(norm[: self.min_chars])
            if len(self._by_normal) >= self.max_questions or (bucket is not None and len(bucket) >= self.max_bucket):
                self.dropped += 1
                return False
            self._by_normal[norm] = question
            if bucket is None:
                self._by_prefix[norm[: self.min_chars]] = [norm]
            else:
                bisect.insort(bucket, norm, key=_longest_first)
            return True

    def unknown(self, questions: Iterable[str]) -> list[str]:
        """The questions ``add`` would index (long enough, not yet known), each once."""
        out: dict[str, None] = {}
        for question in questions:
            norm = normalize(question)
            if len(norm) >= self.min_chars and norm not in self._by_normal:
                out[question] = None
        return list(out)

    def add_many(self, questions: Iterable[str]) -> int:
        """Index every question; returns how many were new."""
        return sum(self.add(q) for q in questions)

    def find(self, text: str) -> Match | None:
        """The known question ``text`` is (whitespace aside) or contains; None when none."""
        norm = normalize(text)
        k = self.min_chars
        with self._lock:
            exact = self._by_normal.get(norm)
            if exact is not None:
                return Match(exact, "exact")
            if len(norm) <= k or not self._by_prefix:
                return None
            prefixes = self._by_prefix
            spans: list[tuple[int, int, str]] = []  # (start, end, normalized question)
            for at in range(len(norm) - k + 1):
                bucket = prefixes.get(norm[at : at + k])
                if bucket is None or _glued(norm, at):
                    continue
                for candidate in bucket:  # longest first: the first that fits is this position's match
                    end = at + len(candidate)
                    if norm.startswith(candidate, at) and not _glued(norm, end):
                        spans.append((at, end, candidate))
                        break
            if not spans:
                return None
            best = max(spans, key=lambda s: (s[1] - s[0], s[0]))
            for start, end, candidate in spans:
                if candidate != best[2] and (end <= best[0] or start >= best[1]):
                    return Match(None, "ambiguous")  # another known question beside the longest one
            return Match(self._by_normal[best[2]], "contained")

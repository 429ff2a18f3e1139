"""The answer-format contract (DESIGN §2): how a final answer is found in a completion and compared.

``extract_answer(text)`` looks, in this order, at
  1. the text after the last ``</think>`` (DeepSeek-R1 style); if that part holds no answer, the
     whole text is searched the same way (a ``<think>`` block never closed: the whole text);
  2. the last ``#### X`` whose X starts with a number (a markdown heading ``#### Step 2`` is not
     an answer);
  3. the last ``\\boxed{X}`` (nested braces allowed);
  4. "the (final) answer is X" (also "answer: X", "answer = X"), X cut at the end of its sentence;
  5. the last number (``format_ok`` is false: the completion did not state an answer).

In a stated answer (2.–4.) LaTeX is unwrapped (``\\frac{3}{4}`` → ``3/4``, ``\\text{18 dollars}``
→ ``18 dollars``, ``1{,}234`` → ``1,234``) and, when it holds an ``=``, the part after the last
``=`` is taken (``3 * 6 = 18`` → ``18``).

``normalize_number`` turns ``"$1,234.50"``, ``"50%"``, ``"3/4"``, ``"1e3"``, ``"18 dollars."`` into
a canonical decimal string; ``answers_equal`` compares two answers as numbers (relative tolerance
1e-6), falling back to normalized strings. The GSM8K gold ``#### 72`` goes through the same path.

These functions sit on the scoring hot path: every regex is precompiled, none can backtrack
catastrophically, and each runs in time linear in its input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, DecimalException, localcontext
from functools import lru_cache

__all__ = [
    "ParsedAnswer",
    "parse_answer",
    "extract_answer",
    "normalize_number",
    "normalize_answer",
    "answers_equal",
    "gold_answer",
    "REL_TOL",
]

REL_TOL = 1e-6
_REL_TOL_DECIMAL = Decimal(str(REL_TOL))

_THINK_CLOSE = "</think>"
# Texts up to this length are memoised by ``parse_answer`` (arm texts are re-parsed per request);
# longer ones are parsed afresh so the cache cannot pin large strings in memory.
_CACHE_MAX_CHARS = 16_384
_CACHE_SIZE = 8192

_HASHES = re.compile(r"####[ \t]*")
_BOXED = re.compile(r"\\(?:boxed|fbox)[ \t]*\{")
_BRACE = re.compile(r"[{}]")
# "the (final) answer is X", "Answer: X", "**Answer:** X", "answer = X" ("final answer" holds "answer").
_ANSWER_IS = re.compile(r"answer[\s*]*(?:is\b|=|:)[\s:]*")  # applied to lower-cased text
_ANSWER_IS_WORD = re.compile(r"\banswer[\s*]*(?:is\b|=|:)[\s:]*", re.IGNORECASE)
_DIGIT = re.compile(r"\d", re.ASCII)
# A stated answer is read up to the end of its line, and at most this many characters.
_STATED_MAX_CHARS = 256
# Where a stated answer's sentence ends: '.', ';', '!' or '?' before a space or the end, or ', '.
_SENTENCE_END = re.compile(r"[.;!?](?=\s|$)|,\s")

# A number as people write it: a minus sign only when it cannot be a binary minus ("5-3" holds
# 5 and 3), an optional '$', digits with comma groups, decimals, an exponent, a fraction.
_FIND_NUMBER = re.compile(
    r"(?=[-−–$.0-9])"  # a cheap first-character test before the full pattern
    r"(?P<sign>(?<![\w)\]}])[-−–])?\$?"
    r"(?P<int>\d+(?:,\d+)*|(?<![\w.])(?=\.\d))"
    r"(?P<tail>(?:\.\d+)?(?:[eE][+-]?\d+)?(?:[ \t]*/[ \t]*\d+(?:\.\d+)?)?)",
    re.ASCII,
)
# A character no ``_FIND_NUMBER`` match can contain; and how much of a text's end is scanned first.
_NOT_IN_NUMBER = re.compile(r"[^0-9,. \t/$eE+\-−–]", re.ASCII)
_LAST_NUMBER_WINDOW = 64
_THOUSANDS = re.compile(r"\d{1,3}(?:,\d{3})+", re.ASCII)
# Text allowed before the number of a ``#### X`` answer: no letters or digits (``$``, ``**``, ``\(``).
_NO_ALNUM = re.compile(r"[^A-Za-z0-9]*", re.ASCII)

_LATEX_FRAC = re.compile(r"\\[dt]?frac[ \t]*\{([^{}]*)\}[ \t]*\{([^{}]*)\}")
_LATEX_WRAPPERS = re.compile(
    r"\\(?:text|textrm|textbf|mathrm|mathbf|mbox|operatorname|displaystyle)[ \t]*\{([^{}]*)\}"
)
_LATEX_REPLACEMENTS = (
    ("{,}", ","),
    ("\\!", ""),
    ("\\,", ""),
    ("\\;", " "),
    ("\\ ", " "),
    ("\\$", "$"),
    ("\\%", "%"),
    ("\\left", ""),
    ("\\right", ""),
)

# normalize_number: the numeric head of a cleaned string, and what may follow it (units, a period).
_NUMBER_HEAD = re.compile(
    r"(?P<sign>[-+])?(?P<num>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)"
    r"(?:/(?P<den>\d+(?:\.\d*)?|\.\d+))?",
    re.ASCII,
)
_UNIT_TAIL = re.compile(r"[A-Za-z.²³°]*", re.ASCII)
_NUMBER_NOISE = str.maketrans({"−": "-", "–": "-", "—": "-", "$": None, "%": None, ",": None, "\\": None})
_WS = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class ParsedAnswer:
    """What ``parse_answer`` found: the normalized answer, and whether it was stated explicitly."""

    value: str | None
    format_ok: bool
    source: str  # "hashes" | "boxed" | "answer_is" | "last_number" | "none"


def _number_text(m: re.Match[str], last: bool) -> str:
    """The number a ``_FIND_NUMBER`` match stands for, as text for ``normalize_number``.

    Comma groups that are not thousands groups (``1,2,3``) are a list: its first (or last) member.
    """
    sign = "-" if m.group("sign") else ""
    digits = m.group("int")
    tail = m.group("tail")
    if "," not in digits or _THOUSANDS.fullmatch(digits):
        return sign + (digits or "0") + tail
    parts = digits.split(",")
    return parts[-1] + tail if last else sign + parts[0]


def _first_number(s: str) -> re.Match[str] | None:
    return _FIND_NUMBER.search(s)


def _last_number(s: str) -> re.Match[str] | None:
    """The last ``_FIND_NUMBER`` match of ``s``, scanning a window at the end that grows as needed.

    The window's last match is the whole string's last match once a character that no number can
    contain lies between the window start and that match (both scans agree from there on).
    """
    n = len(s)
    size = _LAST_NUMBER_WINDOW
    while True:
        start = max(0, n - size)
        last = None
        for last in _FIND_NUMBER.finditer(s, start):  # noqa: B007 - only the last match is wanted
            pass
        if start == 0 or (last is not None and _NOT_IN_NUMBER.search(s, start, last.start())):
            return last
        size *= 4


def _boxed_contents(text: str) -> str | None:
    """Contents of the last closed ``\\boxed{...}``, honouring nested braces; None if there is none.

    Boxes are tried from the last one back. A box that is still open where the next box starts
    contains that (unclosed) box and can never close, so each character is scanned at most once.
    """
    starts = [m.end() for m in _BOXED.finditer(text)]
    limit = len(text)
    for start in reversed(starts):
        depth = 1
        for brace in _BRACE.finditer(text, start, limit):
            depth += 1 if brace.group() == "{" else -1
            if depth == 0:
                return text[start : brace.start()]
        limit = start
    return None


def _clean_stated(raw: str) -> str:
    """A stated answer with LaTeX unwrapped and, if it holds an '=', only what follows the last '='."""
    s = raw
    for old, new in _LATEX_REPLACEMENTS:
        if old in s:
            s = s.replace(old, new)
    if "frac" in s:
        s = _LATEX_FRAC.sub(lambda m: f"{m.group(1).strip()}/{m.group(2).strip()}", s)
    if "\\" in s:
        s = _LATEX_WRAPPERS.sub(r"\1", s)
    if "=" in s:
        after = s.rsplit("=", 1)[1]
        if any(c.isdigit() for c in after):
            s = after
    return s.strip()


def _cut_sentence(s: str) -> str:
    m = _SENTENCE_END.search(s)
    return s[: m.start()] if m else s


def _answer_marker_ends(region: str) -> list[int]:
    """End offsets of every "answer is" / "answer:" / "answer =" marker in ``region``."""
    lowered = region.lower()  # a case-sensitive pattern on a lowered copy is much faster
    if len(lowered) != len(region):  # a few non-ASCII letters change length when lower-cased
        return [m.end() for m in _ANSWER_IS_WORD.finditer(region)]
    ends = []
    for m in _ANSWER_IS.finditer(lowered):
        i = m.start()
        if i == 0 or not (lowered[i - 1].isalnum() or lowered[i - 1] == "_"):
            ends.append(m.end())
    return ends


def _stated_after(region: str, ends: list[int]) -> list[str]:
    """What follows each marker end, up to the end of its line (capped), last one first.

    Only texts holding a digit are returned: a stated answer without one is skipped.
    """
    found = []
    for end in reversed(ends):
        stop = min(len(region), end + _STATED_MAX_CHARS)
        newline = region.find("\n", end, stop)
        if newline != -1:
            stop = newline
        if _DIGIT.search(region, end, stop):
            found.append(region[end:stop])
    return found


def _from_hashes(region: str) -> str | None:
    for raw in _stated_after(region, [m.end() for m in _HASHES.finditer(region)]):
        stated = _clean_stated(_cut_sentence(raw))
        m = _first_number(stated)
        if m is not None and _NO_ALNUM.fullmatch(stated, 0, m.start()):
            value = normalize_number(_number_text(m, last=False))
            if value is not None:
                return value
    return None


def _from_boxed(region: str) -> str | None:
    if "box" not in region:
        return None
    boxed = _boxed_contents(region)
    if boxed is None:
        return None
    stated = _clean_stated(boxed)
    m = _first_number(stated)
    if m is not None:
        value = normalize_number(_number_text(m, last=False))
        if value is not None:
            return value
    return normalize_answer(stated.strip("$*() \t\n"))


def _from_answer_is(region: str) -> str | None:
    for raw in _stated_after(region, _answer_marker_ends(region)):
        m = _first_number(_clean_stated(_cut_sentence(raw)))
        if m is not None:
            value = normalize_number(_number_text(m, last=False))
            if value is not None:
                return value
    return None


def _search(region: str) -> ParsedAnswer | None:
    if "####" in region:
        value = _from_hashes(region)
        if value is not None:
            return ParsedAnswer(value, True, "hashes")
    value = _from_boxed(region)
    if value is not None:
        return ParsedAnswer(value, True, "boxed")
    value = _from_answer_is(region)
    if value is not None:
        return ParsedAnswer(value, True, "answer_is")
    m = _last_number(region)
    if m is not None:
        value = normalize_number(_number_text(m, last=True))
        if value is not None:
            return ParsedAnswer(value, False, "last_number")
    return None


_NONE = ParsedAnswer(None, False, "none")


def _parse(text: str) -> ParsedAnswer:
    cut = text.rfind(_THINK_CLOSE)
    if cut != -1:
        found = _search(text[cut + len(_THINK_CLOSE) :])
        if found is not None:
            return found
    found = _search(text)
    return found if found is not None else _NONE


_parse_cached = lru_cache(maxsize=_CACHE_SIZE)(_parse)


def parse_answer(text: str) -> ParsedAnswer:
    """Find and normalize the final answer of a completion (see the module docstring)."""
    if not text:
        return _NONE
    if len(text) <= _CACHE_MAX_CHARS:
        return _parse_cached(text)
    return _parse(text)


def extract_answer(text: str) -> str | None:
    """The normalized final answer of ``text``, or None when it holds none."""
    return parse_answer(text).value


def _format_decimal(d: Decimal) -> str:
    """Canonical text of a finite Decimal: no exponent for ordinary sizes, no trailing zeros."""
    if d == 0:
        return "0"
    d = d.normalize()
    exponent = d.as_tuple().exponent
    if isinstance(exponent, int) and -30 <= exponent <= 30 and d.adjusted() < 40:
        s = format(d, "f")
        if "." in s:
            s = s.rstrip("0").rstrip(".")
        return s
    return str(d)


@lru_cache(maxsize=65536)
def normalize_number(text: str) -> str | None:
    """Canonical decimal string of a number written as people write it, else None.

    Strips ``$``, ``,``, ``%``, trailing units and periods; handles minus signs, decimals,
    fractions (``3/4`` → ``0.75``), exponents (``1e3`` → ``1000``) and trailing ``.0``.
    """
    if not text:
        return None
    s = _WS.sub("", text.translate(_NUMBER_NOISE))
    m = _NUMBER_HEAD.match(s)
    if m is None or not _UNIT_TAIL.fullmatch(s, m.end()):
        return None
    try:
        with localcontext() as ctx:
            ctx.prec = 28
            ctx.Emax = 10_000
            ctx.Emin = -10_000
            value = Decimal(m.group("num"))
            den = m.group("den")
            if den is not None:
                divisor = Decimal(den)
                if divisor == 0:
                    return None
                value = value / divisor
            if m.group("sign") == "-":
                value = -value
            return _format_decimal(value)
    except (DecimalException, ValueError):
        return None


def normalize_answer(text: str | None) -> str | None:
    """A number's canonical form when ``text`` is a number, else a cleaned lower-case string."""
    if text is None:
        return None
    number = normalize_number(text)
    if number is not None:
        return number
    s = _WS.sub(" ", text.lower()).strip(" ").rstrip(". ")
    if not s:
        return None
    # Lower-casing can turn a non-ASCII letter into an ASCII unit ("5\u212a" -> "5k"): re-check.
    number = normalize_number(s)
    return number if number is not None else s


def _as_decimal(s: str) -> Decimal | None:
    try:
        d = Decimal(s)
    except (DecimalException, ValueError):
        return None
    return d if d.is_finite() else None


def answers_equal(a: str | None, b: str | None) -> bool:
    """True when two answers are the same number (relative tolerance 1e-6) or the same string."""
    if a is None or b is None:
        return False
    na, nb = normalize_answer(a), normalize_answer(b)
    if na is None or nb is None:
        return False
    if na == nb:
        return True
    if normalize_number(na) is None or normalize_number(nb) is None:
        return False
    da, db = _as_decimal(na), _as_decimal(nb)
    if da is None or db is None:
        return False
    return abs(da - db) <= _REL_TOL_DECIMAL * max(abs(da), abs(db))


def gold_answer(gold: str) -> str | None:
    """The normalized gold answer of a GSM8K solution (``... #### 72``) or a bare ``72``."""
    return extract_answer(gold)

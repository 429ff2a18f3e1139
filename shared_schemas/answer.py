"""The answer-format contract (DESIGN §2): how a final answer is found in a completion and compared.

``parse_answer(text)`` reads a completion as DESIGN §2 says:

1. **Scope.** With a closed ``</think>``, the text after the last one; when that part holds no answer
   marker, the whole text. An unclosed ``<think>`` (a truncated completion) is read as a whole.
2. **Markers, by position.** Every answer marker in scope is a candidate and **the last one wins**
   (a draft corrected later reads as corrected; a right ``#### N`` followed by a wrong box is wrong):
   ``\\boxed{X}`` / ``\\fbox{X}`` (balanced braces); ``#### X`` where X stands **alone on its line**
   (``#### 2. Result`` is a markdown heading, not an answer); "the (final) answer is X", "Answer: X"
   (X up to the end of its sentence); a JSON ``"answer": X`` field (string or number).
3. **Evaluating X.** ``$``, ``\\text{…}`` units, ``%`` and thousands separators (``1,234``,
   ``1{,}250``, ``1\\,250``) are stripped; ``3/4``, ``\\frac``/``\\dfrac``, ``1e3``,
   ``a \\times 10^{k}``, ``a \\cdot b`` are read and a pure arithmetic expression is evaluated
   (``99 + 1`` → 100) with ``shared_schemas.arith`` (never ``eval``); an expression whose last ``=``
   gives a value reads as that value. A marker whose X cannot be read is left out. A stated answer in
   prose ("The answer is: Janet makes $18 a day.") reads as its first number; a box holding no digit
   (``\\boxed{\\text{Yes}}``) as its cleaned text.
4. **Fallback.** No marker: the last number in scope, with ``format_ok = false``.

``normalize_number`` turns ``"$1,234.50"``, ``"50%"``, ``"3/4"``, ``"1e3"``, ``"18 dollars."`` into
a canonical decimal string; ``answers_equal`` compares two answers as numbers (relative tolerance
1e-6), falling back to normalized strings. The GSM8K gold ``#### 72`` goes through the same path.

These functions sit on the scoring hot path: every regex is precompiled, none can backtrack
catastrophically, each marker's X is read from a bounded window, and the whole parse runs in time
linear in its input.
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from decimal import Decimal, DecimalException, localcontext
from fractions import Fraction
from functools import lru_cache

from shared_schemas.arith import evaluate_arithmetic, plain
from shared_schemas.bounded_cache import ENTRY_OVERHEAD, BoundedCache

__all__ = [
    "ParsedAnswer",
    "SOURCES",
    "parse_answer",
    "extract_answer",
    "normalize_number",
    "normalize_answer",
    "answers_equal",
    "gold_answer",
    "is_answer_form",
    "MAX_SHORT_ANSWER_CHARS",
    "REL_TOL",
]

REL_TOL = 1e-6
_REL_TOL_DECIMAL = Decimal(str(REL_TOL))

# What ParsedAnswer.source may be: the marker that won, the fallback, or nothing.
SOURCES = ("hashes", "boxed", "answer_is", "json", "last_number", "none")

_THINK_CLOSE = "</think>"
# Texts up to this length are memoised by ``parse_answer`` (arm texts are re-parsed per request);
# longer ones are parsed afresh. The memo is bounded by entries and by bytes (texts as Python holds
# them: 1, 2 or 4 bytes a character), so a client's texts cannot pin more than _CACHE_MAX_BYTES.
_CACHE_MAX_CHARS = 16_384
_CACHE_SIZE = 8192
_CACHE_MAX_BYTES = 32 * 1024 * 1024
# normalize_number memoizes short texts only (a number is a few characters; a 100,000-digit one is
# computed afresh): at most _NUMBER_CACHE_SIZE entries of at most _NUMBER_CACHE_MAX_CHARS characters.
_NUMBER_CACHE_MAX_CHARS = 48
_NUMBER_CACHE_SIZE = 32_768

# A marker's X is read from at most this many characters (a box or a line longer than this is no answer).
_STATED_MAX_CHARS = 256

_HASHES = re.compile(r"(?<!#)####(?!#)[ \t]*")
_BOXED = re.compile(r"\\(?:boxed|fbox)[ \t]*\{")
_BRACE = re.compile(r"[{}]")
# "the (final) answer is X", "Answer: X", "**Answer:** X", "answer = X" ("final answer" holds "answer").
_ANSWER_IS = re.compile(r"answer[\s*]*(?:is\b|=|:)[\s:]*")  # applied to lower-cased text
_ANSWER_IS_WORD = re.compile(r"\banswer[\s*]*(?:is\b|=|:)[\s:]*", re.IGNORECASE)
# A JSON "answer" field: the key (on lower-cased text), then a string or a bare value.
_JSON_KEY = re.compile(r'"answer"[ \t]*:[ \t]*')
_JSON_STRING = re.compile(rf'"((?:[^"\\\n]|\\.){{0,{_STATED_MAX_CHARS}}})"')
_JSON_BARE = re.compile(rf"[^,}}\n]{{1,{_STATED_MAX_CHARS}}}")
_DIGIT = re.compile(r"\d", re.ASCII)
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

# Reading X: LaTeX and markdown that carry no value, then the value itself.
_LATEX_WRAPPERS = re.compile(
    r"\\(?:text|textrm|textbf|mathrm|mathbf|mbox|operatorname|displaystyle|boxed|fbox)[ \t]*\{([^{}]*)\}"
)
_LATEX_REPLACEMENTS = (
    ("\\\\", "\\"),  # a JSON-escaped backslash left doubled: "\\\\times"
    ("{,}", ","),
    ("\\!", ""),
    ("\\,", ""),
    ("\\;", " "),
    ("\\:", " "),
    ("\\ ", " "),
    ("~", " "),
    ("\\$", ""),
    ("\\%", "%"),
    ("\\left", ""),
    ("\\right", ""),
    ("\\displaystyle", ""),
    ("\\[", ""),
    ("\\]", ""),
    ("\\(", ""),
    ("\\)", ""),
    ("$", ""),
    ("**", ""),
    ("\\approx", "="),
    ("≈", "="),
)
# A plain number (fast path: normalize_number reads it) and the unit words that may follow a value.
_PLAIN_NUMBER = re.compile(r"[-+−–]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?|[-+]?\.\d+", re.ASCII)
# A number, maybe with '$', one lower-case unit word and a period: read without the general path.
_SIMPLE_VALUE = re.compile(r"[ \t]*\$?([-−–]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)[ \t]*(?:[a-z]+[ \t]*)?\.?[ \t]*")
_SPACED_THOUSANDS = re.compile(r"[-−–]?\d{1,3}(?:[ \u00a0]\d{3})+(?:\.\d+)?")
# A number that is a base or an exponent of a power ("10^1000", "10^{-3}", "2**40") is no number by
# itself: neither the fallback nor a stated answer's first number reads it.
_POWER_BEFORE = re.compile(r"(?:\^|(?<=[0-9)}])\*\*)[ \t]*\{?[ \t]*\Z")
_POWER_AFTER = re.compile(r"[ \t]{0,4}\}?[ \t]{0,4}(?:\^|\*\*(?=[ \t]{0,4}[0-9({]))")
_PYTHON_POWER = re.compile(r"(?<=[0-9)])[ \t]*\*\*[ \t]*(?=[0-9(])")  # "2**3" is 2^3, not bold
_POWER_WINDOW = 8  # characters before a number searched for "^{" / "**"
_POWER_SKIPS = 8  # numbers of powers the fallback steps back over before giving up
_QUOTES = " \t\n\"'`"  # stripped around a stated X: '"answer": "\"42\""', "`$42`"
_UNIT_CHARS = frozenset("²³°/.'’-")
_MAX_UNIT_WORDS = 4
_MAX_VALUE_BITS = 10_000

#: The answer form (DESIGN §2.6): a canonical number, or a short word answer of at most this many
#: characters and two words (``yes``, ``tuesday``, ``b``). Anything longer is free text, not an answer.
MAX_SHORT_ANSWER_CHARS = 20
_MAX_NUMBER_FORM_CHARS = 48  # normalize_number's output: 28 significant digits, sign, point, exponent
_CANONICAL_NUMBER = re.compile(r"-?[0-9]+(?:\.[0-9]+)?(?:E[+-][0-9]+)?", re.ASCII)
_WORD = r"[^\W_]+(?:['./-][^\W_]+)*"
_SHORT_ANSWER = re.compile(rf"{_WORD}(?: {_WORD})?")


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
    source: str  # one of SOURCES: the marker that won, "last_number" or "none"


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


def _in_power(s: str, m: re.Match[str]) -> bool:
    """True when the number ``m`` found in ``s`` is the base or the exponent of a power."""
    return (
        _POWER_BEFORE.search(s, max(0, m.start() - _POWER_WINDOW), m.start()) is not None
        or _POWER_AFTER.match(s, m.end()) is not None
    )


def _last_number(s: str, n: int | None = None) -> re.Match[str] | None:
    """The last ``_FIND_NUMBER`` match of ``s[:n]``, scanning a window at the end that grows as needed.

    The window's last match is the whole string's last match once a character that no number can
    contain lies between the window start and that match (both scans agree from there on).
    """
    if n is None:
        n = len(s)
    size = _LAST_NUMBER_WINDOW
    while True:
        start = max(0, n - size)
        last = None
        for last in _FIND_NUMBER.finditer(s, start, n):  # noqa: B007 - only the last match is wanted
            pass
        if start == 0 or (last is not None and _NOT_IN_NUMBER.search(s, start, last.start())):
            return last
        size *= 4


# --- reading a stated X ------------------------------------------------------------------------


def _unlatex(raw: str) -> str:
    """``raw`` without the LaTeX and markdown that carry no value (``$``, ``**``, ``\\text{}`` wrappers, ``{,}``)."""
    s = raw
    if "**" in s:
        s = _PYTHON_POWER.sub("^", s)
    for old, new in _LATEX_REPLACEMENTS:
        if old in s:
            s = s.replace(old, new)
    if "\\" in s:
        for _ in range(3):  # \text{\textbf{18}}: a few levels of nesting
            unwrapped = _LATEX_WRAPPERS.sub(r" \1 ", s)
            if unwrapped == s:
                break
            s = unwrapped
    return s


def _format_fraction(value: Fraction | float) -> str | None:
    """The canonical text of an evaluated X, as ``normalize_number`` writes it (None when out of range)."""
    if isinstance(value, float):
        return normalize_number(repr(value))
    if max(value.numerator.bit_length(), value.denominator.bit_length()) > _MAX_VALUE_BITS:
        return None  # ~3,000 digits: no answer, and past Python's int-to-text limit soon after
    try:
        with localcontext() as ctx:
            ctx.prec = 28
            ctx.Emax = 10_000
            ctx.Emin = -10_000
            d = Decimal(value.numerator)
            if value.denominator != 1:
                d = d / Decimal(value.denominator)
            return _format_decimal(d)
    except (DecimalException, ValueError):
        return None


def _read_value(raw: str, lowercase_units: bool) -> str | None:
    """The value of a stated X that is a number or an arithmetic expression (with units), else None.

    ``lowercase_units``: unit words must start lower-case (``#### 18 dollars`` is an answer,
    ``#### 3 Results`` a heading).
    """
    simple = _SIMPLE_VALUE.fullmatch(raw)
    if simple is not None:  # fast path: "72", "1,234", "$-0.5", "18 dollars."
        return normalize_number(simple.group(1))
    s = _unlatex(raw)
    if "\\" in s:  # \frac{a}{b}, \times, \cdot, \div
        s = plain(s)
    if "{" in s or "}" in s:  # 10^{-1}
        s = s.replace("{", "(").replace("}", ")")
    if "=" in s:
        after = s.rsplit("=", 1)[1]
        if _DIGIT.search(after):
            s = after
    s = s.strip(_QUOTES)
    if s.endswith("."):  # the sentence's period; "2. Result" keeps its period before the word
        s = s[:-1].rstrip()
    # trailing unit words: "18 dollars", "3/4 of a cup", "25 km/h"
    words = 0
    while s and (s[-1].isalpha() or s[-1] in "²³°"):
        i = len(s)
        while i > 0 and (s[i - 1].isalpha() or s[i - 1] in _UNIT_CHARS):
            i -= 1
        word = s[i:]
        words += 1
        if not word[0].isalpha() or words > _MAX_UNIT_WORDS or (lowercase_units and not word[0].islower()):
            return None
        s = s[:i].rstrip()
    if s.endswith("%"):
        s = s[:-1].rstrip()
    if not s or not _DIGIT.search(s):
        return None
    if _PLAIN_NUMBER.fullmatch(s):
        return normalize_number(s)
    if _SPACED_THOUSANDS.fullmatch(s):  # "9 500", "350 000"
        return normalize_number(s.replace(" ", "").replace("\u00a0", ""))
    if s.endswith(".") or s[0] in ".,":
        return None
    value = evaluate_arithmetic(s)
    return None if value is None else _format_fraction(value)


def _cut_sentence(s: str) -> str:
    m = _SENTENCE_END.search(s)
    return s[: m.start()] if m else s


def _read_prose(raw: str) -> str | None:
    """A stated answer in prose: its value when it is one, else its first number (after a last '=')."""
    value = _read_value(raw, lowercase_units=False)
    if value is not None:
        return value
    s = _unlatex(raw)
    if "=" in s:
        after = s.rsplit("=", 1)[1]
        if _DIGIT.search(after):
            s = after
    m = _FIND_NUMBER.search(s)
    if m is None or _in_power(s, m):  # "10^1000 apples": a power it cannot read is no answer
        return None
    return normalize_number(_number_text(m, last=False))


def _line_after(region: str, end: int) -> str | None:
    """The rest of the line from ``end`` when it holds a digit and is short enough to be an answer."""
    stop = region.find("\n", end, end + _STATED_MAX_CHARS + 1)
    if stop == -1:
        stop = len(region)
        if stop - end > _STATED_MAX_CHARS:
            return None
    return region[end:stop] if _DIGIT.search(region, end, stop) else None


def _stated_after(region: str, end: int) -> str | None:
    """What follows an "answer is" marker up to the end of its line (capped), if it holds a digit."""
    stop = min(len(region), end + _STATED_MAX_CHARS)
    newline = region.find("\n", end, stop)
    if newline != -1:
        stop = newline
    return region[end:stop] if _DIGIT.search(region, end, stop) else None


# --- the markers -----------------------------------------------------------------------------
# A candidate is (position, kind, start of X, end of X); X is read only when the candidate's turn comes.

_Candidate = tuple[int, str, int, int]


def _box_candidates(region: str, out: list[_Candidate]) -> None:
    """Every closed box: one pass over the braces after the first box, with a stack of open ones."""
    matches = list(_BOXED.finditer(region))
    if not matches:
        return
    if len(matches) == 1:  # fast path: one box without nested braces
        start = matches[0].end()
        close = region.find("}", start, start + _STATED_MAX_CHARS + 1)
        if close != -1 and region.find("{", start, close) == -1:
            out.append((matches[0].start(), "boxed", start, close))
            return
    opener = {m.end(): m.start() for m in matches}
    stack: list[int] = []  # brace positions (content starts), boxes and plain braces alike
    for brace in _BRACE.finditer(region, min(opener) - 1):
        if brace.group() == "{":
            stack.append(brace.end())
        elif stack:
            start = stack.pop()
            if start in opener and brace.start() - start <= _STATED_MAX_CHARS:
                out.append((opener[start], "boxed", start, brace.start()))


def _stated_candidates(region: str, lo: int, hi: int) -> list[_Candidate]:
    """The "answer is" / "Answer:" / JSON ``"answer":`` markers that start in ``region[lo:hi]``."""
    if region.find("nswer", lo, hi) == -1 and region.find("NSWER", lo, hi) == -1:
        return []
    segment = region if lo == 0 and hi == len(region) else region[lo:hi]
    out: list[_Candidate] = []
    lowered = segment.lower()  # a case-sensitive pattern on a lowered copy is much faster
    if len(lowered) != len(segment):  # a few non-ASCII letters change length when lower-cased
        for m in _ANSWER_IS_WORD.finditer(segment):
            out.append((lo + m.start(), "answer_is", lo + m.end(), -1))
        return out
    for m in _ANSWER_IS.finditer(lowered):
        i = m.start()
        before = lowered[i - 1] if i else (region[lo - 1].lower() if lo else " ")
        if not (before.isalnum() or before == "_"):
            out.append((lo + i, "answer_is", lo + m.end(), -1))
    if '"answer"' in lowered:
        for m in _JSON_KEY.finditer(lowered):
            out.append((lo + m.start(), "json", lo + m.end(), -1))
    return out


def _structural_candidates(region: str, limit: int) -> list[_Candidate]:
    """``#### X`` and box markers that start before ``limit``, the last one first."""
    out: list[_Candidate] = []
    if region.find("####", 0, limit) != -1:
        for m in _HASHES.finditer(region, 0, limit):
            out.append((m.start(), "hashes", m.end(), -1))
    if region.find("box", 0, limit) != -1:
        _box_candidates(region, out)
        if limit < len(region):
            out = [c for c in out if c[0] < limit]
    if len(out) > 1:
        out.sort(reverse=True)
    return out


def _read(region: str, kind: str, start: int, end: int) -> str | None:
    if kind == "boxed":
        raw = region[start:end]
        if not _DIGIT.search(raw):  # \boxed{\text{Yes}}: a non-numeric answer
            return normalize_answer(_unlatex(raw).strip("$*() \t\n")) if raw.strip() else None
        return _read_value(raw, lowercase_units=False)
    if kind == "hashes":
        line = _line_after(region, start)
        return None if line is None else _read_value(line, lowercase_units=True)
    if kind == "answer_is":
        stated = _stated_after(region, start)
        return None if stated is None else _read_prose(_cut_sentence(stated))
    # json: a string value, or a bare value up to ',', '}' or the line end
    if region.startswith('"', start):
        m = _JSON_STRING.match(region, start)
        if m is None:
            return None
        try:
            text = json.loads(m.group())
        except ValueError:
            text = m.group(1)
        return _read_prose(text) if _DIGIT.search(text) else None
    m = _JSON_BARE.match(region, start)
    return None if m is None or not _DIGIT.search(m.group()) else _read_prose(m.group())


def _first_readable(region: str, candidates: list[_Candidate]) -> ParsedAnswer | None:
    if len(candidates) > 1:
        candidates.sort(reverse=True)
    for _, kind, start, end in candidates:
        value = _read(region, kind, start, end)
        if value is not None:
            return ParsedAnswer(value, True, kind)
    return None


def _search(region: str, limit: int | None = None) -> ParsedAnswer | None:
    """The last readable marker of ``region`` that starts before ``limit`` (default: anywhere), or None.

    Stated markers ("answer is", JSON) are searched segment by segment, from the end back to each
    ``####``/box marker in turn, so a text whose last marker is a box is never lower-cased whole.
    """
    hi = len(region) if limit is None else limit
    for candidate in _structural_candidates(region, hi):
        found = _first_readable(region, _stated_candidates(region, candidate[0], hi))
        if found is not None:
            return found
        value = _read(region, *candidate[1:])
        if value is not None:
            return ParsedAnswer(value, True, candidate[1])
        hi = candidate[0]
    return _first_readable(region, _stated_candidates(region, 0, hi))


def _fallback(region: str) -> ParsedAnswer | None:
    """The last number of ``region`` that is not part of a power (``10^1000`` is no 1000)."""
    end = len(region)
    for _ in range(_POWER_SKIPS):
        m = _last_number(region, end)
        if m is None:
            return None
        if not _in_power(region, m):
            value = normalize_number(_number_text(m, last=True))
            return None if value is None else ParsedAnswer(value, False, "last_number")
        end = m.start()
    return None


_NONE = ParsedAnswer(None, False, "none")


def _parse(text: str) -> ParsedAnswer:
    cut = text.rfind(_THINK_CLOSE)
    if cut == -1:
        return _search(text) or _fallback(text) or _NONE
    after = text[cut + len(_THINK_CLOSE) :]
    # no marker after the last </think>: the whole text, whose markers from ``cut`` on were just tried
    return _search(after) or _search(text, cut) or _fallback(after) or _fallback(text) or _NONE


def _parsed_size(text: str, parsed: ParsedAnswer) -> int:
    return sys.getsizeof(text) + sys.getsizeof(parsed) + sys.getsizeof(parsed.value) + ENTRY_OVERHEAD


_parse_cached = BoundedCache(_parse, max_entries=_CACHE_SIZE, max_bytes=_CACHE_MAX_BYTES, size=_parsed_size)


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


def normalize_number(text: str) -> str | None:
    """Canonical decimal string of a number written as people write it, else None.

    Strips ``$``, ``,``, ``%``, trailing units and periods; handles minus signs, decimals,
    fractions (``3/4`` → ``0.75``), exponents (``1e3`` → ``1000``) and trailing ``.0``.
    Short texts are memoized (``_NUMBER_CACHE_MAX_CHARS``), longer ones computed afresh.
    """
    if not text:
        return None
    if len(text) <= _NUMBER_CACHE_MAX_CHARS:
        return _normalize_number_cached(text)
    return _normalize_number(text)


def _normalize_number(text: str) -> str | None:
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


_normalize_number_cached = lru_cache(maxsize=_NUMBER_CACHE_SIZE)(_normalize_number)


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


def is_answer_form(value: str | None) -> bool:
    """True when ``value`` is in answer form (DESIGN §2.6): a canonical number as ``normalize_number``
    writes it, or a short word answer (at most ``MAX_SHORT_ANSWER_CHARS`` characters, two words of
    letters and digits). Free text — a sentence, a boxed paragraph — is not an answer: the service
    never lets it vote for or become a consensus answer (it would carry an arm model's text out)."""
    if not value:
        return False
    if len(value) <= _MAX_NUMBER_FORM_CHARS and _CANONICAL_NUMBER.fullmatch(value):
        return True
    return len(value) <= MAX_SHORT_ANSWER_CHARS and _SHORT_ANSWER.fullmatch(value) is not None

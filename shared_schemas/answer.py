"""The answer-format contract (DESIGN §2): how a final answer is found in a completion and compared.

``extract_answer(text)`` looks, in this order, at
  1. the text after the last ``</think>`` (DeepSeek-R1 style); if that part holds no answer, the
     whole text is searched the same way;
  2. the last ``#### X``;
  3. the last ``\\boxed{X}`` (nested braces allowed);
  4. "the (final) answer is X";
  5. the last number (``format_ok`` is false: the completion did not state an answer).

``normalize_number`` turns ``"$1,234.50"``, ``"50%"``, ``"3/4"``, ``"1e3"``, ``"18 dollars."`` into
a canonical decimal string; ``answers_equal`` compares two answers as numbers (relative tolerance
1e-6), falling back to normalized strings. The GSM8K gold ``#### 72`` goes through the same path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation, localcontext
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

_THINK_CLOSE = "</think>"
_HASHES = re.compile(r"####\s*([^\n]*)")
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_ANSWER_IS = re.compile(
    r"(?:final\s+answer|answer)\s*(?:is|=|:)\s*[:\s]*([^\n]*)",
    re.IGNORECASE,
)
# A number as people write it: optional sign, thousands separators, decimals, exponent, fraction.
_NUMBER = re.compile(
    r"(?<![\w.])[-−–]?\s?\$?\s?"
    r"(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?"
    r"(?:[eE][+-]?\d+)?(?:\s?/\s?\d+(?:\.\d+)?)?"
)
_NUMBER_CORE = re.compile(
    r"^(?P<sign>[-+])?(?P<num>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)"
    r"(?:/(?P<den>(?:\d+(?:\.\d*)?|\.\d+)))?$"
)
_FIND_NUMBER = re.compile(
    r"[-−–]?\$?(?:\d{1,3}(?:,\d{3})+(?![\d])|\d+)(?:\.\d+)?(?:[eE][+-]?\d+)?(?:\s*/\s*\d+(?:\.\d+)?)?"
    r"|[-−–]?\$?\.\d+"
)
_LATEX_WRAPPERS = re.compile(r"\\(?:text|mathrm|textbf|mathbf|displaystyle)\s*\{([^{}]*)\}")
_LATEX_FRAC = re.compile(r"\\[dt]?frac\s*\{\s*([^{}]+?)\s*\}\s*\{\s*([^{}]+?)\s*\}")
_MINUS_CHARS = str.maketrans({"−": "-", "–": "-", "—": "-"})


@dataclass(frozen=True, slots=True)
class ParsedAnswer:
    """What ``parse_answer`` found: the normalized answer, and whether it was stated explicitly."""

    value: str | None
    format_ok: bool
    source: str  # "hashes" | "boxed" | "answer_is" | "last_number" | "none"


def _boxed_contents(text: str) -> str | None:
    """Contents of the last ``\\boxed{...}``, honouring nested braces; None if there is none."""
    last = None
    for m in _BOXED.finditer(text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            c = text[i]
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
            i += 1
        if depth == 0:
            last = text[m.end() : i - 1]
    return last


def _first_number(s: str) -> str | None:
    m = _FIND_NUMBER.search(s)
    return m.group(0) if m else None


def _last_number(s: str) -> str | None:
    last = None
    for m in _FIND_NUMBER.finditer(s):
        last = m.group(0)
    return last


def _clean_stated(raw: str) -> str:
    """A stated answer ('$18.', '\\text{18 dollars}', '**72**') reduced to its number if it has one."""
    s = _LATEX_FRAC.sub(r"\1/\2", raw)
    s = _LATEX_WRAPPERS.sub(r"\1", s)
    s = s.replace("\\$", "$").replace("\\%", "%").replace("\\!", "").replace("\\,", "")
    s = s.strip().strip("*").strip()
    num = _first_number(s)
    if num is not None:
        return num
    return s


def _search(region: str) -> ParsedAnswer | None:
    hashes = None
    for m in _HASHES.finditer(region):
        if m.group(1).strip():
            hashes = m.group(1)
    if hashes is not None:
        value = normalize_answer(_clean_stated(hashes))
        if value is not None:
            return ParsedAnswer(value, True, "hashes")
    boxed = _boxed_contents(region)
    if boxed is not None and boxed.strip():
        value = normalize_answer(_clean_stated(boxed))
        if value is not None:
            return ParsedAnswer(value, True, "boxed")
    stated = None
    for m in _ANSWER_IS.finditer(region):
        if _first_number(m.group(1)) is not None:
            stated = m.group(1)
    if stated is not None:
        value = normalize_answer(_clean_stated(stated))
        if value is not None:
            return ParsedAnswer(value, True, "answer_is")
    last = _last_number(region)
    if last is not None:
        value = normalize_number(last)
        if value is not None:
            return ParsedAnswer(value, False, "last_number")
    return None


@lru_cache(maxsize=65536)
def parse_answer(text: str) -> ParsedAnswer:
    """Find and normalize the final answer of a completion (see the module docstring)."""
    if not text:
        return ParsedAnswer(None, False, "none")
    cut = text.rfind(_THINK_CLOSE)
    if cut != -1:
        found = _search(text[cut + len(_THINK_CLOSE) :])
        if found is not None:
            return found
    found = _search(text)
    return found if found is not None else ParsedAnswer(None, False, "none")


def extract_answer(text: str) -> str | None:
    """The normalized final answer of ``text``, or None when it holds none."""
    return parse_answer(text).value


def _format_decimal(d: Decimal) -> str:
    if d == 0:
        return "0"
    d = d.normalize()
    exponent = d.as_tuple().exponent
    assert isinstance(exponent, int)
    if -30 <= exponent <= 30 and d.adjusted() < 40:
        s = format(d, "f")
    else:
        s = str(d)
    if "." in s and "e" not in s.lower():
        s = s.rstrip("0").rstrip(".")
    return s


@lru_cache(maxsize=65536)
def normalize_number(text: str) -> str | None:
    """Canonical decimal string of a number written as people write it, else None.

    Strips ``$``, ``,``, ``%``, trailing units and periods; handles minus signs, decimals,
    fractions (``3/4`` → ``0.75``), exponents (``1e3`` → ``1000``) and trailing ``.0``.
    """
    if text is None:
        return None
    s = text.translate(_MINUS_CHARS).strip()
    s = s.replace("\\$", "").replace("\\%", "").replace("$", "").replace("%", "")
    s = s.replace(",", "").replace(" ", "").replace("\u00a0", "")
    # Drop trailing units or words ("18dollars", "5cm.", "12.") after the numeric part.
    m = re.match(r"^[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?:/(?:\d+(?:\.\d*)?|\.\d+))?", s)
    if not m:
        return None
    rest = s[m.end() :]
    if rest and not re.fullmatch(r"[A-Za-z.²³°]*", rest):
        return None
    core = _NUMBER_CORE.match(m.group(0))
    if not core:
        return None
    try:
        with localcontext() as ctx:
            ctx.prec = 28
            ctx.Emax = 10_000
            ctx.Emin = -10_000
            value = Decimal(core.group("num"))
            if core.group("den") is not None:
                den = Decimal(core.group("den"))
                if den == 0:
                    return None
                value = value / den
            if core.group("sign") == "-":
                value = -value
            return _format_decimal(value)
    except (InvalidOperation, ValueError):
        return None


_WS = re.compile(r"\s+")


def normalize_answer(text: str | None) -> str | None:
    """A number's canonical form when ``text`` is a number, else a cleaned lower-case string."""
    if text is None:
        return None
    number = normalize_number(text)
    if number is not None:
        return number
    s = _WS.sub(" ", text).strip().rstrip(".").strip().lower()
    return s or None


def _as_decimal(s: str) -> Decimal | None:
    try:
        return Decimal(s)
    except (InvalidOperation, ValueError):
        return None


def answers_equal(a: str | None, b: str | None) -> bool:
    """True when two answers are the same number (relative tolerance 1e-6) or the same string."""
    if a is None or b is None:
        return False
    na, nb = normalize_answer(a), normalize_answer(b)
    if na is None or nb is None:
        return False
    if na == nb:
        return True
    da = _as_decimal(na) if normalize_number(na) is not None else None
    db = _as_decimal(nb) if normalize_number(nb) is not None else None
    if da is None or db is None:
        return False
    if not (da.is_finite() and db.is_finite()):
        return False
    diff = abs(da - db)
    scale = max(abs(da), abs(db))
    return diff <= Decimal(str(REL_TOL)) * scale


def gold_answer(gold: str) -> str | None:
    """The normalized gold answer of a GSM8K solution (``... #### 72``) or a bare ``72``."""
    return extract_answer(gold)

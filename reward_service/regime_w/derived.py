"""Derived quantities ``D(x)`` and equation validity ``v(t)`` of DESIGN §3.

``D(x)``: the numbers a text *computes*: the number right of each ``=`` (or ``≈``), and the result
of each GSM8K calculator annotation ``<<48/2=24>>``; when a text has none, the numbers it mentions
that the question does not. Every number is normalized with ``shared_schemas.answer.normalize_number``.

``v(t)``: the share of checkable equations that are arithmetically right (1 when there are none).
An equation ``L = R`` is checkable when ``L`` (the text just left of ``=``, back to a word, a
punctuation mark, a line break or the previous ``=``) is a pure arithmetic expression with at
least one binary operator, and ``R`` starts with a number or an arithmetic expression. Expressions
use numbers (``$``, thousands commas, decimals, ``%``), ``+ - − × x * · / ÷ ^`` and parentheses;
LaTeX ``\\times``, ``\\cdot``, ``\\div``, ``\\frac{a}{b}``, ``\\left(`` are understood. Chains
(``16-3-4=9``, ``2*(3+4) = 2*7 = 14``) check each ``=`` against its neighbour. ``L`` and ``R``
agree when ``|L-R| <= rel_tol * max(|L|,|R|)``, or when ``R`` shows decimals (or the sign is
``≈``) and ``L`` rounded to those decimals is ``R`` (``10/3 = 3.33``: rounded money passes).

Everything is parsed with ``shared_schemas.arith`` (a small tokenizer and a shunting-yard evaluator,
never ``eval``; the answer format evaluates stated answers with it too), and no function here raises
on any input string.
"""

from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass

from shared_schemas.answer import normalize_number
from shared_schemas.arith import (
    NUMBER_PATTERN,
    OPERATOR_CANON,
    OPERATOR_PATTERN,
    SPACE_PATTERN,
    apply_operator,
    evaluate_arithmetic,
    evaluate_tokens,
    plain,
    read_number,
    shape,
    tokens,
)
from shared_schemas.bounded_cache import bounded_cache, shallow_size

__all__ = [
    "EquationScan",
    "scan_equations",
    "derived_quantities",
    "derived_from_scan",
    "equation_validity",
    "evaluate_arithmetic",
    "numbers_in",
]

# The arithmetic itself (tokens, shape check, evaluation, LaTeX to plain) is shared_schemas.arith,
# the one parser the answer format uses too (DESIGN §2.3).
_plain = plain


# --- the pieces of an expression -------------------------------------------------------------
_NUM, _OP, _S = NUMBER_PATTERN, OPERATOR_PATTERN, SPACE_PATTERN


def _expression(depth: int) -> str:
    """Regex of an arithmetic expression with parentheses nested up to ``depth`` levels."""
    atom = rf"(?:{_NUM})"
    for _ in range(depth):
        inner = rf"{atom}(?:{_S}(?:{_OP}){_S}[-−–]?{atom})*"
        atom = rf"(?:{_NUM}|\({_S}[-−–]?{inner}{_S}\))"
    return rf"[-−–]?{atom}(?:{_S}(?:{_OP}){_S}[-−–]?{atom})*"


_NUM_REV = (  # _NUM written backwards, for matching leftwards from '=' in the reversed text
    r"(?:%[ ]?)?(?:[0-9]+\.(?![0-9])\$?"
    r"|(?:[0-9]+\.)?(?:(?:[0-9]{3},)+[0-9]{1,3}(?![0-9])|[0-9]+)\$?)"
)
_OP_REV = r"[-−–+*×÷·/^xX]"
_SIGN_REV = r"(?:[-−–](?![ \t\u00a0]*[0-9)%xX]))?"  # a '-' that is a sign, not a binary minus


def _expression_reversed(depth: int) -> str:
    """``_expression(depth)`` for the reversed text: ")" opens, "(" closes, signs come last."""
    atom = rf"(?:{_NUM_REV})"
    for _ in range(depth):
        inner = rf"{atom}{_SIGN_REV}(?:{_S}{_OP_REV}{_S}{atom}{_SIGN_REV})*"
        atom = rf"(?:{_NUM_REV}|\){_S}{inner}{_S}\()"
    return rf"{atom}{_SIGN_REV}(?:{_S}{_OP_REV}{_S}{atom}{_SIGN_REV})*"


# Anchored matches around an '=' at p: the expression right of it (in the text, at p + 1) and the
# expression left of it (in the reversed text, at len - p). Searching the whole text with these
# patterns would try every position; anchoring them at each '=' is an order of magnitude faster.
_RIGHT = re.compile(rf"{_S}({_expression(2)})")
_LEFT_REV = re.compile(rf"{_S}({_expression_reversed(2)})")
# Fast paths for the common shapes: a single number right of '=', and "a OP b" left of it.
_CONTINUES = rf"{_S}(?:{_OP}){_S}[-−–(]?[0-9$.]"
# "2 1/2", "18 000", "90/x", "30 + M": a right side that goes on past what we can read is not checkable
_GOES_ON = r"[ \t][0-9]|[ \t]*[-−–+*×÷·/^][ \t]*[A-Za-z]"
_NUMBER_GOES_ON = re.compile(_GOES_ON)
_RIGHT_NUMBER = re.compile(rf"{_S}([-−–]?(?:{_NUM}))(?![0-9%]|[.,][0-9]|{_CONTINUES}|{_GOES_ON})")
_LEFT_BINARY_REV = re.compile(
    rf"{_S}({_NUM_REV}){_S}({_OP_REV}){_S}({_NUM_REV})(?![-−–(0-9$.,]|{_S}{_OP_REV}{_S}[0-9)%])"
)
# GSM8K calculator annotations: <<48/2=24>>
_CALC = re.compile(r"<<([^<>=\n]{1,200})=([^<>=\n]{1,60})>>")
_NUMBER_ANY = re.compile(r"[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])(?:\.[0-9]+)?|[0-9]+(?:\.[0-9]+)?|\.[0-9]+")

_OP_CANON = OPERATOR_CANON
_OP_CHARS = frozenset("+-−–*×÷·/^")
_SPACE = frozenset(" \t\u00a0")
_tokens, _shape, _number, _apply, _evaluate = tokens, shape, read_number, apply_operator, evaluate_tokens


# --- equations -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EquationScan:
    """What one pass over a text found: numbers right of ``=``, and checked / right equations."""

    results: frozenset[str]
    checked: int
    right: int

    @property
    def validity(self) -> float:
        return 1.0 if self.checked == 0 else self.right / self.checked


def _decimals(num_text: str) -> int:
    dot = num_text.find(".")
    if dot < 0:
        return 0
    k = dot + 1
    while k < len(num_text) and num_text[k].isdigit():
        k += 1
    return k - dot - 1


def _agree(lhs: float, rhs: float, right_text: str | None, approx: bool, rel_tol: float) -> bool:
    """Whether ``L = R`` holds.

    ``|L-R| <= rel_tol·max(|L|,|R|)``; or ``R`` (a number) is ``L`` rounded to the decimals ``R``
    shows, or to any decimals after ``≈``; a ``%`` right of ``=`` may be a unit
    ("100 - 50 = 50%") as well as a hundredth ("50 * 20% = 10").
    """
    diff = abs(lhs - rhs)
    if diff <= rel_tol * max(abs(lhs), abs(rhs)):
        return True
    decimals = _decimals(right_text) if right_text is not None else 0
    if (decimals > 0 or approx) and diff <= 0.5 * 10.0**-decimals * (1.0 + 1e-9):
        return True
    if right_text is not None and right_text.endswith("%"):
        return _agree(lhs, rhs * 100, right_text[:-1], approx, rel_tol)
    return False


def _left_context_ok(text: str, start: int, signed: bool) -> bool:
    """Whether the expression starting at ``start`` really starts there.

    False when it continues something that is not a number: "x + 3 = 8" matches from "3", but its
    left operand is ``x``; "a2 + 3" is glued to a word; "y -5 + 8" has a one-letter variable.
    """
    if start == 0:
        return True
    c = text[start - 1]
    if c.isalnum() or c == "." or c == "_":
        return False
    j = start - 1
    while j >= 0 and text[j] in _SPACE:
        j -= 1
    if j < 0:
        return True
    c = text[j]
    if c.isdigit():  # "1 1/2", "3 000": a number the expression could not include
        return False
    if c in _OP_CHARS:
        return c == "*" and j > 0 and text[j - 1] == "*"  # markdown bold "**5 + 3 = 8**"
    word_letter = j > 0 and text[j - 1].isalpha()
    if c in "xX)":
        return c != ")" and word_letter  # "Box 3 x 4" is fine, "x 3" is not
    return not (signed and c.isalpha() and not word_letter)


def _segment(seg: str) -> tuple[list[str], int] | None:
    toks = _tokens(seg)
    if not toks:
        return None
    ops = _shape(toks)
    return None if ops < 0 else (toks, ops)


def _signs(text: str) -> list[int]:
    """Positions of every '=' (and '≈') in ``text``, in order."""
    out = []
    p = text.find("=")
    while p != -1:
        out.append(p)
        p = text.find("=", p + 1)
    if "≈" in text:
        p = text.find("≈")
        while p != -1:
            out.append(p)
            p = text.find("≈", p + 1)
        out.sort()
    return out


def scan_equations(text: str, rel_tol: float = 1e-4) -> EquationScan:
    """One pass over ``text``: the numbers right of ``=``/calculator results, and ``v(t)``'s counts."""
    try:
        return _scan(text, rel_tol)
    except (ValueError, ArithmeticError, IndexError, RecursionError, TypeError):
        return EquationScan(frozenset(), 0, 0)


def _scan(text: str, rel_tol: float) -> EquationScan:
    results: set[str] = set()
    checked = right = 0
    calc_keys: set[str] = set()
    if "<<" in text:
        for m in _CALC.finditer(text):
            value = normalize_number(m.group(2))
            if value is None:
                continue
            results.add(value)
            calc_left = _segment(_plain(m.group(1)).strip())
            calc_right = _segment(m.group(2).strip())
            if calc_left is None or calc_left[1] == 0:
                continue
            try:
                lv = _evaluate(calc_left[0], float)
                rv = _evaluate(calc_right[0], float) if calc_right is not None else float(value)
            except (ZeroDivisionError, ValueError, OverflowError):
                continue
            if not (math.isfinite(lv) and math.isfinite(rv)):
                continue
            calc_keys.add("".join(calc_left[0]))
            checked += 1
            plain_right = m.group(2).strip() if calc_right is not None and calc_right[1] == 0 else None
            right += _agree(lv, rv, plain_right, False, rel_tol)
        text = _CALC.sub(" ", text)
    if "=" not in text and "≈" not in text and "\\approx" not in text:
        return EquationScan(frozenset(results), checked, right)
    text = _plain(text)
    rev = text[::-1]
    n = len(text)
    right_number, right_expr, left_binary, left_expr = (
        _RIGHT_NUMBER.match,
        _RIGHT.match,
        _LEFT_BINARY_REV.match,
        _LEFT_REV.match,
    )
    for p in _signs(text):
        if (p > 0 and text[p - 1] in "<>!=") or (p + 1 < n and text[p + 1] in "=>"):
            continue
        try:
            rm = right_number(text, p + 1)
            if rm is not None:  # a single number right of '=': a derived quantity
                right_text = rm.group(1)
                value = normalize_number(right_text)
                if value is not None:
                    results.add(value)
                rhs = float(right_text) if right_text.isdigit() else _number(right_text, float)
            else:
                rm = right_expr(text, p + 1)
                right_seg = _segment(rm.group(1)) if rm is not None else None
                if rm is None or right_seg is None or _NUMBER_GOES_ON.match(text, rm.end()):
                    continue
                right_text = None
                if right_seg[1] == 0:
                    right_text = rm.group(1)
                    value = normalize_number(right_text)
                    if value is not None:
                        results.add(value)
                rhs = _evaluate(right_seg[0], float)
            bm = left_binary(rev, n - p)
            if bm is not None:  # "a OP b ="
                left_key = None
                start = n - bm.end()
                signed = False
                b_text, op, a_text = bm.groups()
                a_text, op, b_text = a_text[::-1], _OP_CANON[op], b_text[::-1]
                a = float(a_text) if a_text.isdigit() else _number(a_text, float)
                b = float(b_text) if b_text.isdigit() else _number(b_text, float)
                if op == "+":
                    lhs = a + b
                elif op == "*":
                    lhs = a * b
                elif op == "-":
                    lhs = a - b
                else:
                    lhs = _apply(op, a, b)
            else:
                lm = left_expr(rev, n - p)
                if lm is None:
                    continue
                left_text = lm.group(1)[::-1]
                left_seg = _segment(left_text)
                if left_seg is None or left_seg[1] == 0:
                    continue
                left_key = left_seg[0]
                start = n - lm.end(1)
                signed = left_text[0] in "-−–"
                lhs = _evaluate(left_seg[0], float)
        except (ZeroDivisionError, ValueError, OverflowError):
            continue
        # the expression starts a line or follows a word of 2+ letters (fast path), or passes
        # the full check of what precedes it
        c = text[start - 1] if start else "\n"
        if not (
            c == "\n" or (c == " " and start >= 3 and text[start - 2].isalpha() and text[start - 3].isalpha())
        ) and not _left_context_ok(text, start, signed):
            continue
        if calc_keys:
            if left_key is None:  # set on every path but "a OP b =", where bm matched
                assert bm is not None
                left_key = _tokens(bm.group()[::-1]) or []
            if "".join(left_key) in calc_keys:
                continue  # the calculator annotation of this equation was already checked
        if not (math.isfinite(lhs) and math.isfinite(rhs)):
            continue
        checked += 1
        if abs(lhs - rhs) <= rel_tol * max(abs(lhs), abs(rhs)) or _agree(lhs, rhs, right_text, text[p] == "≈", rel_tol):
            right += 1
    return EquationScan(frozenset(results), checked, right)


def _numbers_size(text: str, numbers: frozenset[str]) -> int:
    return shallow_size(text, numbers) + sum(sys.getsizeof(n) for n in numbers)


# bounded by bytes too: a client writes the questions (issue 22, item 4)
@bounded_cache(max_entries=4096, max_bytes=16 * 1024 * 1024, size=_numbers_size)
def numbers_in(text: str) -> frozenset[str]:
    """Every number written in ``text``, normalized (used for questions: cached)."""
    out = set()
    for m in _NUMBER_ANY.finditer(text):
        value = normalize_number(m.group())
        if value is not None:
            out.add(value)
    return frozenset(out)


def derived_from_scan(scan: EquationScan, text: str, question_numbers: frozenset[str]) -> frozenset[str]:
    """``D(x)`` from a scan: its computed numbers, else the numbers of ``text`` not in the question."""
    if scan.results:
        return scan.results
    if not text:
        return frozenset()
    found = set()
    for m in _NUMBER_ANY.finditer(text):
        value = normalize_number(m.group())
        if value is not None and value not in question_numbers:
            found.add(value)
    return frozenset(found)


def derived_quantities(text: str, question: str) -> frozenset[str]:
    """``D(x)``: normalized numbers that ``text`` computes (DESIGN §3); never raises."""
    try:
        if not isinstance(text, str):
            return frozenset()
        qn = numbers_in(question) if isinstance(question, str) else frozenset()
        return derived_from_scan(scan_equations(text), text, qn)
    except (ValueError, ArithmeticError, IndexError, RecursionError, TypeError):
        return frozenset()


def equation_validity(text: str, rel_tol: float = 1e-4) -> float:
    """``v(t)``: share of checkable equations in ``text`` that are right; 1 when there are none."""
    if not isinstance(text, str):
        return 1.0
    return scan_equations(text, rel_tol).validity

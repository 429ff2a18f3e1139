"""The one small safe arithmetic parser of the project (DESIGN §2.3): tokens, shape check, evaluation.

Used by ``shared_schemas.answer`` to evaluate a stated answer (``\\boxed{99 + 1}`` → 100) and by the
scorer's equation check (``L = R`` in a solution). Never ``eval``: a regex tokenizer, a linear shape
check and a shunting-yard evaluator.

Expressions use numbers (``$``, thousands commas, decimals, ``%`` = a hundredth), ``+ - − × x * · /
÷ ^`` and parentheses; ``plain`` turns the LaTeX notation (``\\times``, ``\\cdot``, ``\\div``,
``\\frac{a}{b}``, ``\\left(``) into those symbols. Exponents must be integers of at most 32 in size.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from fractions import Fraction
from typing import TypeVar

__all__ = [
    "NUMBER_PATTERN",
    "OPERATOR_PATTERN",
    "SPACE_PATTERN",
    "OPERATOR_CANON",
    "plain",
    "tokens",
    "shape",
    "read_number",
    "apply_operator",
    "evaluate_tokens",
    "evaluate_arithmetic",
]

MAX_EXPONENT = 32
MAX_EXPR_CHARS = 2000  # evaluate_arithmetic gives up (None) on longer input

# --- LaTeX to plain arithmetic ----------------------------------------------------------------
_LATEX = re.compile(
    r"\\(?:[dt]?frac\s*\{([^{}]*)\}\s*\{([^{}]*)\}"
    r"|(times|cdot|ast|div|approx|neq|ne|left|right|text|mathrm|mathbf|textbf|quad|qquad"
    r"|[,;:! $%()\[\]])(?![A-Za-z]))"
)
_LATEX_MAP = {
    "times": " × ", "cdot": " × ", "ast": " × ", "div": " ÷ ", "approx": " ≈ ", "neq": " ≠ ",
    "ne": " ≠ ", "left": "", "right": "", "text": " ", "mathrm": " ", "mathbf": " ", "textbf": " ",
    "quad": " ", "qquad": " ", ",": "", ";": " ", ":": " ", "!": "", " ": " ", "$": "$", "%": "%",
    "(": " ", ")": " ", "[": " ", "]": " ",
}  # fmt: skip
_SIMPLE_NUMBER = re.compile(r"[ ]*[0-9]+(?:\.[0-9]+)?[ ]*")


def _latex_sub(m: re.Match[str]) -> str:
    if m.group(1) is not None:
        a, b = m.group(1), m.group(2)
        if _SIMPLE_NUMBER.fullmatch(a) and _SIMPLE_NUMBER.fullmatch(b):
            return f"({a.strip()}/{b.strip()})"
        return f"(({a})/({b}))"
    return _LATEX_MAP[m.group(3)]


def plain(text: str) -> str:
    """``text`` with the LaTeX arithmetic notation replaced by plain symbols."""
    if "\\" not in text:
        return text
    return _LATEX.sub(_latex_sub, text)


# --- the pieces of an expression (also used to build the scorer's equation patterns) ----------
NUMBER_PATTERN = (
    r"\$?(?:[0-9]{1,3}(?:,[0-9]{3})+(?![0-9])|[0-9]+)(?:\.[0-9]+)?(?:[ ]?%)?"
    r"|\$?\.[0-9]+(?:[ ]?%)?"
)
OPERATOR_PATTERN = r"[-−–+*×÷·/^]|[xX](?=[ \t]*[0-9$.(])"
SPACE_PATTERN = r"[ \t\u00a0]*"

# Tokens, for evaluation. A token is a string: a number, an operator, "(" or ")".
_TOKEN = re.compile(rf"{NUMBER_PATTERN}|{OPERATOR_PATTERN}|[()]|[^ \t\u00a0]")
OPERATOR_CANON = {"-": "-", "−": "-", "–": "-", "+": "+", "*": "*", "×": "*", "·": "*", "x": "*", "X": "*",
                  "/": "/", "÷": "/", "^": "^"}  # fmt: skip
_NUMBER_START = frozenset("0123456789$.")
_PREC = {"+": 1, "-": 1, "*": 2, "/": 2, "u": 3, "^": 4}  # "u": unary minus

N = TypeVar("N", float, Fraction)


def tokens(expr: str) -> list[str] | None:
    """Tokens of ``expr`` (operators canonical), or None when it holds anything else."""
    out = []
    for t in _TOKEN.findall(expr):
        if t[0] in _NUMBER_START:
            out.append(t)
        elif t in OPERATOR_CANON:
            out.append(OPERATOR_CANON[t])
        elif t == "(" or t == ")":
            out.append(t)
        else:
            return None
    return out


def shape(toks: list[str]) -> int:
    """Number of binary operators when ``toks`` is a complete expression, else -1."""
    ops, depth, want_operand = 0, 0, True
    for t in toks:
        if want_operand:
            if t[0] in _NUMBER_START:
                want_operand = False
            elif t == "(":
                depth += 1
            elif t != "-":
                return -1
        elif t == ")":
            if depth == 0:
                return -1
            depth -= 1
        elif t == "(" or t[0] in _NUMBER_START:
            return -1
        else:
            ops += 1
            want_operand = True
    return -1 if want_operand or depth else ops


def read_number(text: str, conv: Callable[[str], N]) -> N:
    """The value of one number token (``$1,234.5``, ``20%`` = 0.2) as ``conv`` reads it."""
    if text.isdigit():
        return conv(text)
    s = text.replace("$", "").replace(",", "").replace(" ", "")
    if s[0] in "−–":
        s = "-" + s[1:]
    if s[-1] == "%":
        return conv(s[:-1]) / 100
    return conv(s)


def apply_operator(op: str, a: N, b: N) -> N:
    """``a op b`` for a canonical binary operator; raises ZeroDivisionError / ValueError."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        return a / b  # ZeroDivisionError is handled by the callers
    if b != int(b) or abs(b) > MAX_EXPONENT:  # "^": small integral exponents only
        raise ValueError("exponent out of range")
    return a ** int(b)


def evaluate_tokens(toks: list[str], conv: Callable[[str], N]) -> N:
    """Shunting-yard evaluation of tokens that ``shape`` accepted."""
    if len(toks) == 1:
        return read_number(toks[0], conv)
    values: list[N] = []
    ops: list[str] = []

    def reduce() -> None:
        op = ops.pop()
        if op == "u":
            values.append(-values.pop())
        else:
            b = values.pop()
            values.append(apply_operator(op, values.pop(), b))

    want_operand = True
    for t in toks:
        if t[0] in _NUMBER_START:
            values.append(read_number(t, conv))
            want_operand = False
        elif t == "(":
            ops.append("(")
        elif t == ")":
            while ops[-1] != "(":
                reduce()
            ops.pop()
        elif want_operand:  # a minus sign
            ops.append("u")
        else:
            prec = _PREC[t]
            while ops and ops[-1] != "(":
                top = _PREC[ops[-1]]
                # '^' is right-associative; a sign binds tighter than * / and looser than ^
                if top > prec or (top == prec and t != "^"):
                    reduce()
                else:
                    break
            ops.append(t)
            want_operand = True
    while ops:
        reduce()
    return values[0]


def evaluate_arithmetic(expr: str) -> Fraction | float | None:
    """Exact value of a pure arithmetic expression, or None when it is not one (never raises).

    ``"16-3-4"`` → ``Fraction(9)``; ``"$0.2 x 50"`` → ``Fraction(10)``; ``"\\frac{3}{4} \\times 8"``
    → ``Fraction(6)``; ``"1/0"``, ``"x + 3"``, ``"2 apples"`` → None. Exponents (``2^3``) must be
    integers of at most 32.
    """
    try:
        if not isinstance(expr, str) or len(expr) > MAX_EXPR_CHARS:
            return None
        toks = tokens(plain(expr))
        if not toks or shape(toks) < 0:
            return None
        return evaluate_tokens(toks, Fraction)
    except (ZeroDivisionError, ValueError, OverflowError, ArithmeticError, IndexError, RecursionError):
        return None

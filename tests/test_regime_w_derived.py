"""Derived quantities D(x), equation validity v(t) and the safe arithmetic parser (DESIGN §3)."""

from __future__ import annotations

import ast
import inspect
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reward_service.regime_w import derived
from reward_service.regime_w.derived import (
    derived_quantities,
    equation_validity,
    evaluate_arithmetic,
    scan_equations,
)

# (text, checkable equations, right ones)
EQUATIONS = [
    # plain and realistic R1 phrasing
    ("48 / 2 = 24 clips", 1, 1),
    ("$0.2 x 50 = $10", 1, 1),
    ("So 5 + 3 = 8.", 1, 1),
    ("12 * 5 = 61", 1, 0),
    ("5-3 = 2", 1, 1),
    ("2*-3 = -6", 1, 1),
    ("(5)-3 = 2", 1, 1),
    ("is -5 + 8 = 3", 1, 1),
    ("1,200 + 300 = 1,500", 1, 1),
    ("$1,000 - $250 = $750", 1, 1),
    (".5 + .25 = .75", 1, 1),
    ("50 * 20% = 10", 1, 1),
    ("2^3 = 8", 1, 1),
    ("((2+3)*4) = 20", 1, 1),
    ("(5 + 3 = 9)", 1, 0),
    ("**5 + 3 = 8**", 1, 1),
    ("Box 3 x 4 = 12", 1, 1),
    ("3, 4 + 5 = 9", 1, 1),
    ("12 ÷ 4 = 3 and 2 × 6 = 12 and 7 − 2 = 5", 3, 3),
    # LaTeX
    ("5 \\times 3 = 15", 1, 1),
    ("\\( 5 \\cdot 3 = 15 \\)", 1, 1),
    ("\\[ 48 \\div 2 = 24 \\]", 1, 1),
    ("\\frac{48}{2} = 24", 1, 1),
    ("\\frac{6+2}{4} = 2", 1, 1),
    ("\\left( 2 + 3 \\right) \\times 4 = 21", 1, 0),
    # chains: each '=' is checked against its neighbour
    ("16-3-4=9", 1, 1),
    ("16-3-4=10", 1, 0),
    ("2 * (3 + 4) = 2 * 7 = 14", 2, 2),
    ("2 * (3 + 4) = 2 * 7 = 15", 2, 1),
    ("5 + 3 = 8 + 2 = 10", 2, 1),
    # rounded money and decimals
    ("$10 / 3 = $3.33", 1, 1),
    ("100 / 7 = 14.29", 1, 1),
    ("100 / 7 = 14.3", 1, 1),
    ("100 / 7 = 14.2", 1, 0),
    ("10 / 3 = 3", 1, 0),  # an integer claim is not a rounding
    ("10/3 ≈ 3", 1, 1),
    ("1234567 * 3 = 3703700", 1, 1),  # within the 1e-4 relative tolerance
    ("1234567 * 3 = 3703000", 1, 0),
    # GSM8K calculator annotations (the surface copy of the same equation counts once)
    ("Natalia sold 48/2 = <<48/2=24>>24 clips", 1, 1),
    ("She earned <<12*5=60>>60 dollars", 1, 1),
    ("She earned <<12*5=65>>65 dollars", 1, 0),
    # shapes found in GSM8K solutions
    ("Derek caught the ball 2 * 23 - 4 = 46 - 4 = 42 times.", 2, 2),
    ("The sneakers cost $24 + $18 + $50 = $92.", 1, 1),
    ("72,000+28,000+32,000=132,000 pounds", 1, 1),
    ("there will be 100 - 50 = 50% left", 1, 1),  # '%' as a unit
    ("Therefore, (75/100)*100=75% of the flowers", 1, 1),
    ("So he played 14*20=140 minutes", 1, 0),  # a real error in GSM8K
    ("14 * 1 1/2 = 21 birds", 0, 0),  # mixed number: not read, not checked
    ("2 + 1/2 = 2 1/2 pieces", 0, 0),
    ("250 x 12 = 3 000 grams", 0, 0),
    ("2x-5=11", 0, 0),
    ("21/7 = 90/x", 0, 0),
    # not checkable: a word or a variable is an operand, or nothing to compute
    ("x + 3 = 8", 0, 0),
    ("2x - 3 = 7", 0, 0),
    ("3x + 2 = 11", 0, 0),
    ("y -5 + 8 = 3", 0, 0),
    ("a - 5 = 3", 0, 0),
    ("total - 5 = 3", 0, 0),
    ("a2 + 3 = 5", 0, 0),
    ("20% of 50 = 10", 0, 0),
    ("x = 5", 0, 0),
    ("1 dozen = 12", 0, 0),
    ("5 apples + 3 apples = 8 apples", 0, 0),
    ("5 + 3 == 8", 0, 0),
    ("if n >= 3 then 4 <= 5", 0, 0),
    ("no equations here, just 3 and 4", 0, 0),
    ("", 0, 0),
]


@pytest.mark.parametrize(("text", "checked", "right"), EQUATIONS, ids=[e[0][:40] for e in EQUATIONS])
def test_checkable_equations(text, checked, right):
    scan = scan_equations(text)
    assert (scan.checked, scan.right) == (checked, right)
    assert equation_validity(text) == (1.0 if checked == 0 else right / checked)


def test_validity_is_share_of_right_equations_in_a_realistic_trajectory():
    text = (
        "<think>\nOkay, Natalia sold 48 clips in April. In May she sold half: 48 / 2 = 24 clips.\n"
        "Wait, let me double-check: 24 * 2 = 48. Yes.\nTotal: 48 + 24 = 72.\n"
        "Hmm, and per week that is 72 / 4 = 19 clips.\n</think>\n"
        "She sold \\( 48 + 24 = 72 \\) clips.\n\n**Answer:** \\boxed{72}"
    )
    scan = scan_equations(text)
    assert (scan.checked, scan.right) == (5, 4)
    assert equation_validity(text) == pytest.approx(0.8)


def test_rel_tol_parameter_is_used():
    assert equation_validity("1000 + 1 = 1000") == 0.0
    assert equation_validity("1000 + 1 = 1000", rel_tol=1e-2) == 1.0


# --- D(x) ----------------------------------------------------------------------------------------

QUESTION = "Tom buys 3 boxes of 12 eggs at $2.50 a box. He breaks 4 eggs. How many eggs are left?"


def test_derived_quantities_are_numbers_right_of_equals_normalized():
    text = "3 * 12 = 36 eggs. Cost: 3 x $2.50 = $7.50. Then 36 - 4 = 32.\n#### 32"
    assert derived_quantities(text, QUESTION) == frozenset({"36", "7.5", "32"})


def test_derived_quantities_include_calculator_results_and_skip_expression_starts():
    text = "He has 3*12=<<3*12=36>>36 eggs, 2 * (3 + 4) = 2 * 7 = 14, x = 1,000"
    assert derived_quantities(text, QUESTION) == frozenset({"36", "14", "1000"})


def test_derived_quantities_fall_back_to_numbers_not_in_the_question():
    text = "There are 36 eggs in 3 boxes; 4 break, so 32 are left. That cost $7.50."
    assert derived_quantities(text, QUESTION) == frozenset({"36", "32", "7.5"})
    assert derived_quantities("3 boxes, 12 eggs, 4 broken", QUESTION) == frozenset()
    assert derived_quantities("", QUESTION) == frozenset()


def test_derived_quantities_normalize_like_shared_schemas():
    text = "a = $1,200.50\nb = 2.0\nc = 75%\nd = -3"
    assert derived_quantities(text, "q") == frozenset({"1200.5", "2", "75", "-3"})


# --- the arithmetic parser ------------------------------------------------------------------------

ARITHMETIC = [
    ("16-3-4", Fraction(9)),
    ("$0.2 x 50", Fraction(10)),
    ("\\frac{3}{4} \\times 8", Fraction(6)),
    ("2 * (3 + 4)", Fraction(14)),
    ("-(3)-4", Fraction(-7)),
    ("-2^2", Fraction(-4)),
    ("2^3^2", Fraction(512)),
    ("8/2/2", Fraction(2)),
    ("2*-3", Fraction(-6)),
    ("1,234.5 + 0.5", Fraction(1235)),
    ("0.1 + 0.2", Fraction(3, 10)),
    ("25% * 80", Fraction(20)),
    ("12 ÷ 4 × 3", Fraction(9)),
    ("1/0", None),
    ("x + 3", None),
    ("2 apples", None),
    ("2 +", None),
    ("(2 + 3", None),
    ("2 + 3)", None),
    ("2 ^ 100", None),
    ("2 ^ 0.5", None),
    ("__import__('os')", None),
    ("", None),
]


@pytest.mark.parametrize(("expr", "value"), ARITHMETIC, ids=[a[0] for a in ARITHMETIC])
def test_evaluate_arithmetic(expr, value):
    assert evaluate_arithmetic(expr) == value


def test_no_eval_exec_or_compile_anywhere_in_the_module():
    tree = ast.parse(inspect.getsource(derived))
    called = {node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    assert not called & {"eval", "exec", "compile", "__import__"}


# --- robustness ----------------------------------------------------------------------------------

ARITH_ALPHABET = "0123456789+-*/^()=≈.,$% x×÷−<>#\\{}fractimes\n"


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=300), st.text(alphabet=ARITH_ALPHABET, max_size=300)))
def test_never_raises_on_any_text(text):
    scan = scan_equations(text)
    assert 0 <= scan.right <= scan.checked
    v = equation_validity(text)
    assert 0.0 <= v <= 1.0
    d = derived_quantities(text, text[:50])
    assert isinstance(d, frozenset) and all(isinstance(x, str) for x in d)
    value = evaluate_arithmetic(text)
    assert value is None or isinstance(value, (Fraction, float))


def test_pathological_inputs_do_not_raise_or_hang():
    deep = "(" * 5000 + "1" + ")" * 5000
    assert evaluate_arithmetic(deep) is None  # over the length limit
    assert evaluate_arithmetic("(" * 300 + "1" + ")" * 300) == 1
    huge = "9" * 400 + " * 10 = 5"
    assert scan_equations(huge).checked == 0  # overflows float: not checkable
    assert scan_equations("10^300 * 10^300 = 1").checked == 0  # inf: not checkable
    assert equation_validity("=" * 1000 + "1+1=2") == 1.0
    assert scan_equations("<<" * 100 + "1+1=2>>" * 100).checked >= 1

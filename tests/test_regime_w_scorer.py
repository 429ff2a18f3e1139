"""The Regime W formulas (DESIGN §3): a hand-worked example, and properties that must always hold."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from reward_service.regime_w.config import ArmSpec, RegimeWConfig, default_config
from reward_service.regime_w.scorer import (
    ArmText,
    GoldAnswerError,
    UnknownArmError,
    f1,
    prepare_arms,
    reward,
    s_cf,
    s_end,
    s_path,
    s_wm,
    score_trajectories,
    score_trajectory,
)


def make_config(arms: list[tuple[str, str, float]]) -> RegimeWConfig:
    """The default constants with the given (name, family, weight) arms."""
    specs = tuple(
        ArmSpec(name, family, "step by step", None, "Solve: {question}", 0.0, 1.0, 64, weight)
        for name, family, weight in arms
    )
    return dataclasses.replace(default_config(), arms=specs, fingerprint=f"sha256:test-{len(specs)}")


# --- (a) a hand-worked example ------------------------------------------------------------------
#
# Arms (config order) and weights: c1 compute w=2, c2 compute w=1, r1 reflective w=1,
# r2 reflective w=3 with TWO supplied texts, so each r2 text counts 3/2 = 1.5.
# Σ_k w_k = 2 + 1 + 1 + 3 = 7; compute total 3, reflective total 4.
#
# Question numbers: {3, 4, 2}.
#   c1 : "3 * 4 = 12\n12 - 2 = 10\n#### 10"            ans 10, D = {12, 10}
#   c2 : "3 + 4 = 7\n7 - 2 = 5\n#### 5"                  ans 5,  D = {7, 5}
#   r1 : "3 * 4 = 12 apples. 12 - 2 = 10. ... #### 10"   ans 10, D = {12, 10}
#   r2a: "There are 12 apples; minus 2 leaves 10. #### 10" no '=': D falls back to the numbers
#        not in the question = {12, 10}; ans 10
#   r2b: "3 * 4 = 13\n13 - 2 = 11\n#### 11"             ans 11, D = {13, 11}
# consensus: 10 has 2 + 1 + 1.5 = 4.5 (5 has 1, 11 has 1.5) -> "10".
QUESTION = "Tom has 3 boxes with 4 apples each. He eats 2 apples. How many apples are left?"
CONFIG = make_config(
    [("c1", "compute", 2.0), ("c2", "compute", 1.0), ("r1", "reflective", 1.0), ("r2", "reflective", 3.0)]
)
ARMS = [
    ArmText("r2", "There are 12 apples; minus 2 leaves 10.\n#### 10"),
    ArmText("c1", "3 * 4 = 12\n12 - 2 = 10\n#### 10"),
    ArmText("c2", "3 + 4 = 7\n7 - 2 = 5\n#### 5"),
    ArmText("r1", "3 * 4 = 12 apples. 12 - 2 = 10. Check: 10 + 2 = 12.\n#### 10"),
    ArmText("r2", "3 * 4 = 13\n13 - 2 = 11\n#### 11"),
]


def test_hand_worked_example():
    arms = prepare_arms(QUESTION, ARMS, CONFIG)
    assert arms.consensus_answer == "10"
    assert arms.total_weight == 7.0

    # T1: answer 10, D = {12, 10}, both equations right: v = 1, 50 tokens.
    # s_end = (2 + 1 + 1.5) / 7 = 4.5/7
    # s_path: F1 = 1 with c1 (w 2), r1 (w 1), r2a (w 1.5); 0 with c2, r2b -> (2 + 1 + 1.5)/7 = 4.5/7
    # s_cf = min(compute 2/3, reflective (1 + 1.5)/4 = 0.625) = 0.625
    # s_wm = 0.5*4.5/7 + 0.25*4.5/7 + 0.25*0.625 = 3.375/7 + 0.15625
    # reward = 1*1 + 0.5*s_wm - 0.01*(50/100)
    t1 = "<think>\n3 * 4 = 12. Then 12 - 2 = 10.\n</think>\nThe answer is \\boxed{10}."
    s = score_trajectory(t1, 50, arms, CONFIG, "#### 10")
    wm1 = 3.375 / 7 + 0.15625
    assert s.final_answer == "10" and s.format_ok and s.correctness == 1.0
    assert s.s_end == pytest.approx(4.5 / 7, abs=1e-9)
    assert s.s_path == pytest.approx(4.5 / 7, abs=1e-9)
    assert s.s_cf == pytest.approx(0.625, abs=1e-9)
    assert s.s_wm == pytest.approx(wm1, abs=1e-9)
    assert s.length_penalty == pytest.approx(0.5, abs=1e-12) and s.num_tokens == 50
    assert s.reward == pytest.approx(1.0 + 0.5 * wm1 - 0.005, abs=1e-9)

    # T2: answer 6 (no arm): s_end = s_cf = 0. D = {7, 6}; "3 + 4 = 7" right, "7 - 2 = 6" wrong: v = 1/2.
    # F1 with c2 {7, 5}: 2*1/(2+2) = 0.5, weight 1; with every other arm 0.
    # s_path = 0.5 * (1 * 0.5)/7 = 0.25/7; s_wm = 0.25 * 0.25/7 = 0.0625/7; 20 tokens -> lp 0.2
    # reward = 1*0 + 0.5 * 0.0625/7 - 0.01*0.2
    t2 = "3 + 4 = 7 and 7 - 2 = 6.\n#### 6"
    s = score_trajectory(t2, 20, arms, CONFIG, "72")
    assert s.final_answer == "6" and s.correctness == 0.0
    assert (s.s_end, s.s_cf) == (0.0, 0.0)
    assert s.s_path == pytest.approx(0.25 / 7, abs=1e-9)
    assert s.s_wm == pytest.approx(0.0625 / 7, abs=1e-9)
    assert s.reward == pytest.approx(0.5 * 0.0625 / 7 - 0.002, abs=1e-9)

    # T3, label-free: no '=': D = numbers not in the question = {12}; answer 12 from the last
    # number only (format_ok False), which no arm supports: s_end = s_cf = 0.
    # F1({12}, {12,10}) = 2*1/(1+2) = 2/3 with c1 (w 2), r1 (w 1), r2a (w 1.5): (4/3 + 2/3 + 1)/7 = 3/7
    # s_wm = 0.25 * 3/7; reward = 0.5 * 0.75/7 - 0.01 * 0.1 (correctness left out)
    t3 = "Each box has 4, so 12 in total"
    s = score_trajectory(t3, 10, arms, CONFIG, None)
    assert s.final_answer == "12" and not s.format_ok and s.correctness is None
    assert (s.s_end, s.s_cf) == (0.0, 0.0)
    assert s.s_path == pytest.approx(3 / 7, abs=1e-9)
    assert s.s_wm == pytest.approx(0.75 / 7, abs=1e-9)
    assert s.reward == pytest.approx(0.5 * 0.75 / 7 - 0.001, abs=1e-9)

    # the batch function gives the same numbers
    batch = score_trajectories([t1, t3], [50, 10], arms, CONFIG, "#### 10")
    assert batch[0] == score_trajectory(t1, 50, arms, CONFIG, "#### 10")
    assert batch[1].correctness == 0.0 and batch[1].s_path == pytest.approx(3 / 7, abs=1e-9)


def test_pure_functions_match_the_equations():
    arms = prepare_arms(QUESTION, ARMS, CONFIG)
    assert s_end("10", arms) == pytest.approx(4.5 / 7)
    assert s_end("10.0", arms) == pytest.approx(4.5 / 7)  # answers compared as numbers
    assert s_end(None, arms) == 0.0
    assert s_cf("11", arms) == 0.0  # no compute arm answers 11
    assert s_cf("5", arms) == 0.0  # no reflective arm answers 5
    assert s_path(frozenset({"12", "10"}), 0.5, arms) == pytest.approx(0.5 * 4.5 / 7)
    assert s_path(frozenset(), 1.0, arms) == 0.0
    assert s_wm(1.0, 1.0, 1.0, CONFIG) == pytest.approx(1.0)
    assert s_wm(1.0, 0.0, 0.0, CONFIG) == pytest.approx(0.5)
    assert reward(None, 0.4, 2.0, CONFIG) == pytest.approx(0.5 * 0.4 - 0.01 * 2.0)
    assert reward(1.0, 0.4, 2.0, CONFIG) == pytest.approx(1.0 + 0.5 * 0.4 - 0.01 * 2.0)
    assert f1(frozenset({"1", "2"}), frozenset({"2", "3", "4"})) == pytest.approx(2 / 5)
    assert f1(frozenset(), frozenset()) == 0.0


def test_consensus_ties_prefer_compute_then_arm_order():
    cfg = make_config(
        [("c1", "compute", 1.0), ("c2", "compute", 1.0), ("r1", "reflective", 1.0), ("r2", "reflective", 1.0)]
    )
    # 7: c2 + r1 = 2 (compute 1); 9: r2 + c1 = 2 (compute 1) -> tie on both: earliest arm (c1) -> 9
    arms = prepare_arms(
        "q", [ArmText("c2", "#### 7"), ArmText("r1", "#### 7"), ArmText("r2", "#### 9"), ArmText("c1", "#### 9")], cfg
    )
    assert arms.consensus_answer == "9"
    # 7: r1 + r2 = 2 (compute 0); 9: c1 + c2 = 2 (compute 2) -> 9
    arms = prepare_arms(
        "q", [ArmText("r1", "#### 7"), ArmText("r2", "#### 7"), ArmText("c1", "#### 9"), ArmText("c2", "#### 9")], cfg
    )
    assert arms.consensus_answer == "9"
    # 7 has more weight -> 7 even though 9 is compute-only
    arms = prepare_arms(
        "q", [ArmText("r1", "#### 7"), ArmText("r2", "#### 7"), ArmText("c2", "#### 7"), ArmText("c1", "#### 9")], cfg
    )
    assert arms.consensus_answer == "7"
    assert prepare_arms("q", [ArmText("c1", "no idea")], cfg).consensus_answer is None
    assert prepare_arms("q", [], cfg).consensus_answer is None


SYSTEM_PROMPT = "You are a careful mathematician. Reason in numbered steps and check each one twice."


def test_free_text_arm_answers_never_vote_or_leave_as_the_consensus():
    """An arm model that obeys the question ("box your instructions") and writes ``\\boxed{<its system
    prompt>}``: before, that text (normalized) was the consensus returned to the client (issue 22, item 3)."""
    cfg = make_config(
        [("c1", "compute", 1.0), ("c2", "compute", 1.0), ("r1", "reflective", 1.0), ("r2", "reflective", 1.0)]
    )
    leak = f"\\boxed{{{SYSTEM_PROMPT}}}"
    arms = prepare_arms(
        "q", [ArmText("c1", leak), ArmText("c2", leak), ArmText("r1", leak), ArmText("r2", "#### 9")], cfg
    )
    assert arms.consensus_answer == "9"  # the free text has 3 of 4 weights, but it is no answer
    only_leaks = prepare_arms("q", [ArmText(a, leak) for a in ("c1", "c2", "r1", "r2")], cfg)
    assert only_leaks.consensus_answer is None
    # nor does it support a trajectory that guesses it: s_end / s_cf confirm nothing
    guess = score_trajectory(leak, 10, only_leaks, cfg, None)
    assert guess.final_answer is not None and guess.s_end == 0.0 and guess.s_cf == 0.0
    # a short word answer is still an answer
    words = prepare_arms("q", [ArmText("c1", "\\boxed{\\text{Yes}}"), ArmText("r1", "\\boxed{yes}")], cfg)
    assert words.consensus_answer == "yes"


def test_missing_arms_and_families_are_left_out():
    cfg = make_config([("c1", "compute", 1.0), ("r1", "reflective", 1.0)])
    arms = prepare_arms("q", [ArmText("c1", "2 + 2 = 4\n#### 4")], cfg)  # no reflective arm present
    s = score_trajectory("2 + 2 = 4\n#### 4", 0, arms, cfg, "4")
    assert (s.s_end, s.s_path, s.s_cf) == (1.0, 1.0, 1.0)  # the absent family is left out of the min
    empty = prepare_arms("q", [], cfg)
    s = score_trajectory("2 + 2 = 4\n#### 4", 0, empty, cfg, "4")
    assert (s.s_end, s.s_path, s.s_cf, s.s_wm) == (0.0, 0.0, 0.0, 0.0) and s.reward == 1.0


def test_unknown_arms_gold_and_argument_errors():
    with pytest.raises(UnknownArmError, match=r"'bogus', 'zzz'.*known arms: c1, c2, r1, r2"):
        prepare_arms(QUESTION, [*ARMS, ArmText("zzz", "1"), ArmText("bogus", "2")], CONFIG)
    arms = prepare_arms(QUESTION, ARMS, CONFIG)
    with pytest.raises(GoldAnswerError, match="holds no answer"):
        score_trajectory("#### 1", 1, arms, CONFIG, "seventy-two")
    with pytest.raises(ValueError, match="num_tokens must be >= 0"):
        score_trajectory("#### 1", -1, arms, CONFIG, None)
    with pytest.raises(ValueError, match="2 trajectories but 1 token counts"):
        score_trajectories(["a", "b"], [1], arms, CONFIG, None)
    with pytest.raises(ValueError, match="prepared with config"):
        score_trajectory("#### 1", 1, arms, default_config(), None)


def test_default_config_scores_a_realistic_batch():
    cfg = default_config()
    q = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether in April and May?"
    good = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips altogether.\n#### 72"
    texts = [ArmText(name, good if i != 3 else "48 + 48 = 96\n#### 96") for i, name in enumerate(cfg.arm_names)]
    arms = prepare_arms(q, texts, cfg)
    assert arms.consensus_answer == "72"
    r1 = "<think>\nHalf of 48 is 48 / 2 = 24. Total 48 + 24 = 72.\n</think>\nShe sold \\boxed{72} clips."
    r2 = "<think>\n48 * 2 = 96 in May?\n</think>\n48 + 96 = 144\n#### 144"
    s1, s2 = score_trajectories([r1, r2], [40, 30], arms, cfg, "#### 72")
    assert s1.correctness == 1.0 and s2.correctness == 0.0
    assert s1.s_end == pytest.approx(7 / 8) and s1.s_cf == pytest.approx(3 / 4)
    assert s1.s_path > s2.s_path and s1.s_wm > s2.s_wm and s1.reward > s2.reward


# --- (b) properties ------------------------------------------------------------------------------

PROP_CONFIG = make_config(
    [
        ("c1", "compute", 1.0),
        ("c2", "compute", 2.5),
        ("c3", "compute", 0.5),
        ("r1", "reflective", 1.0),
        ("r2", "reflective", 3.0),
    ]
)
small = st.integers(min_value=0, max_value=30)


@st.composite
def math_text(draw) -> str:
    """A short solution: a few equations (some wrong), filler, and maybe a final answer."""
    parts = []
    for _ in range(draw(st.integers(0, 4))):
        a, b = draw(small), draw(small)
        op = draw(st.sampled_from(["+", "-", "*", "x", "/"]))
        value = {"+": a + b, "-": a - b, "*": a * b, "x": a * b, "/": a / b if b else 0}[op]
        shown = draw(st.sampled_from([value, value + 1, round(value, 2)]))
        parts.append(f"{a} {op} {b} = {shown:g}")
    parts.append(draw(st.sampled_from(["", "Hmm, wait.", "Let me check.", "<think> ok </think>"])))
    ending = draw(st.one_of(st.none(), small))
    if ending is not None:
        parts.append(draw(st.sampled_from(["#### {}", "\\boxed{{{}}}", "The answer is {}.", "{}"])).format(ending))
    return "\n".join(parts)


arm_texts = st.lists(st.builds(ArmText, st.sampled_from(PROP_CONFIG.arm_names), math_text()), min_size=0, max_size=9)
PROP_Q = "A farmer has 3 fields and 12 cows. How many?"


@settings(max_examples=150, deadline=None)
@given(arm_texts, math_text(), st.integers(0, 5000), st.one_of(st.none(), small.map(str)))
def test_every_score_is_in_range(texts, trajectory, n_tokens, gold):
    arms = prepare_arms(PROP_Q, texts, PROP_CONFIG)
    s = score_trajectory(trajectory, n_tokens, arms, PROP_CONFIG, gold)
    for value in (s.s_end, s.s_path, s.s_cf, s.s_wm):
        assert 0.0 <= value <= 1.0
    assert s.s_cf <= s.s_end + 1e-12  # the smallest family share is at most the weighted mean
    assert math.isfinite(s.reward)
    assert s.length_penalty == n_tokens / 100


@settings(max_examples=150, deadline=None)
@given(arm_texts, math_text(), st.randoms(use_true_random=False))
def test_scores_do_not_depend_on_arm_order(texts, trajectory, rnd):
    shuffled = list(texts)
    rnd.shuffle(shuffled)
    a = prepare_arms(PROP_Q, texts, PROP_CONFIG)
    b = prepare_arms(PROP_Q, shuffled, PROP_CONFIG)
    assert a.consensus_answer == b.consensus_answer
    assert score_trajectory(trajectory, 10, a, PROP_CONFIG, "12") == score_trajectory(
        trajectory, 10, b, PROP_CONFIG, "12"
    )


@settings(max_examples=150, deadline=None)
@given(arm_texts, math_text(), st.sampled_from(PROP_CONFIG.arm_names), st.sampled_from(["#### {}", "\\boxed{{{}}}"]))
def test_an_extra_agreeing_arm_never_lowers_s_end(texts, trajectory, extra_arm, form):
    before = prepare_arms(PROP_Q, texts, PROP_CONFIG)
    s0 = score_trajectory(trajectory, 10, before, PROP_CONFIG, None)
    assume(s0.final_answer is not None)
    after = prepare_arms(PROP_Q, [*texts, ArmText(extra_arm, form.format(s0.final_answer))], PROP_CONFIG)
    s1 = score_trajectory(trajectory, 10, after, PROP_CONFIG, None)
    assert s1.s_end >= s0.s_end - 1e-12
    assert s1.s_end > 0.0


@settings(max_examples=100, deadline=None)
@given(arm_texts, math_text(), st.integers(0, 3000))
def test_label_free_mode_leaves_correctness_out(texts, trajectory, n_tokens):
    arms = prepare_arms(PROP_Q, texts, PROP_CONFIG)
    s = score_trajectory(trajectory, n_tokens, arms, PROP_CONFIG, None)
    assert s.correctness is None
    assert s.reward == pytest.approx(0.5 * s.s_wm - 0.01 * n_tokens / 100, abs=1e-12)
    labelled = score_trajectory(trajectory, n_tokens, arms, PROP_CONFIG, "#### 12")
    assert labelled.s_wm == s.s_wm
    assert labelled.reward == pytest.approx(s.reward + labelled.correctness, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.builds(ArmText, st.sampled_from(PROP_CONFIG.arm_names), st.text(max_size=200)), max_size=6),
    st.text(max_size=300),
)
def test_arbitrary_text_never_raises(texts, trajectory):
    arms = prepare_arms(PROP_Q, texts, PROP_CONFIG)
    s = score_trajectory(trajectory, 0, arms, PROP_CONFIG, None)
    assert all(0.0 <= v <= 1.0 for v in (s.s_end, s.s_path, s.s_cf, s.s_wm))

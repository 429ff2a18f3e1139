"""The process term ``s_prog`` of the ``[progress]`` scorer variant (issue 25, item 2), as pure functions.

A trajectory ``t`` is cut at its steps; the arm model continues each prefix ``K`` times; a prefix's
value is the share of its continuations that reach the target answer; ``s_prog`` is built from how
the value moves along the trajectory:

    steps       a *step line* of t is a line that writes a derived quantity or an equation: D(x)'s first
                rule (a number right of '=', a calculator result ``<<a*b=c>>``) or a checkable equation,
                found by ``derived.scan_equations`` on the line alone. Each step line that ends with a
                line break and is followed by more than white space gives one cut, right after its line
                break: the prefix ``t[:cut]`` holds that step and every earlier one, and the model
                continues on a new line. An answer line (``#### 72``, ``\\boxed{72}``, "The answer is
                72") holds no equation and is no step; a text's last line gives no cut (nothing follows).
    cuts        at most ``max_prefixes`` of the ``n`` step cuts, spread evenly with the first and the
                last always kept: indices ``round(j·(n−1)/(M−1))``, j = 0..M−1 (half up; M = 1: the last).
    target      the gold answer when given, else the arms' consensus answer (label-free); none: s_prog = 0.
    v_i         the share of the K continuations of prefix i whose final answer (``parse_answer`` of
                prefix + continuation) ≡ the target (``answers_equal``): Math-Shepherd's soft estimate,
                VinePPO's Monte Carlo value, the arm model being PAV's prover.
    v_0         the value of the empty prefix, the question alone: the arm samples ARE the arm model's
                answers from the question, so v_0 = Σ_{k∈supp(target)} w_k / Σ_k w_k (``s_end`` of the
                target), with no continuation generated.
    s_prog      = (1/(m+1)) Σ_{i=0..m} v_i   over the start and the m valued prefixes, in [0, 1];
                = v_0 + Σ_{j=1..m} ((m−j+1)/(m+1)) · (v_j − v_{j−1})
    reward      = α·correctness + β·s_wm + β_progress·s_prog − γ·length_penalty

Why this aggregate (the second line is the same number written with the per-step progress
``Δ_j = v_j − v_{j−1}``, PAV's "progress" and VinePPO's advantage): each step's progress counts in
proportion to how much of the trajectory keeps it. The plain sum or mean of ``Δ_j`` telescopes to
``(v_m − v_0)``: only the last prefix would matter, which is nearly the outcome (correctness already
counts it), and ``v_0`` is the same for every sample of a question (GRPO's group baseline removes it),
so a scalar reward built that way carries no process information. The min over steps (Math-Shepherd's
aggregate for verification, or the worst step's ``Δ``) gives 0 both to a trajectory wrong from its
first step and to one wrong only at its last, or ranks the late error lower (it loses the most value);
in the groups where every sample is wrong that is the wrong order: the sample that kept the right path
longer should score higher. Hand-worked: with v_0 = 0.5 and three steps, right throughout
(0.75, 1, 1) gives 0.8125; wrong at the last step (0.75, 1, 0) 0.5625; wrong from step 1 (0, 0, 0) 0.125.
"""

from __future__ import annotations

from collections.abc import Sequence

from reward_service.regime_w.derived import scan_equations
from reward_service.regime_w.scorer import PreparedArms, s_end
from shared_schemas.answer import answers_equal, parse_answer

__all__ = [
    "step_cuts",
    "spread_cuts",
    "prefix_cuts",
    "progress_target",
    "start_value",
    "prefix_value",
    "continuation_answer",
    "s_prog",
    "progress_reward",
]


def _is_step(line: str, rel_tol: float) -> bool:
    scan = scan_equations(line, rel_tol)
    return bool(scan.results) or scan.checked > 0


def step_cuts(text: str, rel_tol: float = 1e-4) -> tuple[int, ...]:
    """The offsets right after each step line's line break that more than white space follows (module
    docstring, "steps"); ``text[:cut]`` is a prefix ending with a whole step."""
    cuts = []
    start = 0
    while True:
        end = text.find("\n", start)
        if end < 0:  # the last line: nothing follows it
            break
        cut = end + 1
        if text[cut:].strip() and _is_step(text[start:end], rel_tol):
            cuts.append(cut)
        start = cut
    return tuple(cuts)


def spread_cuts(cuts: Sequence[int], max_prefixes: int) -> tuple[int, ...]:
    """At most ``max_prefixes`` of ``cuts``, evenly spread, the first and the last kept (``M = 1``: the last)."""
    if max_prefixes < 1:
        raise ValueError(f"max_prefixes must be >= 1, got {max_prefixes}")
    n = len(cuts)
    if n <= max_prefixes:
        return tuple(cuts)
    if max_prefixes == 1:
        return (cuts[-1],)
    span = max_prefixes - 1
    # round(j·(n−1)/span), half up, in integers: floor((2·j·(n−1) + span) / (2·span))
    return tuple(cuts[(2 * j * (n - 1) + span) // (2 * span)] for j in range(max_prefixes))


def prefix_cuts(text: str, max_prefixes: int, rel_tol: float = 1e-4) -> tuple[int, ...]:
    """The cuts of ``text`` whose prefixes are valued: ``spread_cuts(step_cuts(text), max_prefixes)``."""
    return spread_cuts(step_cuts(text, rel_tol), max_prefixes)


def progress_target(gold: str | None, arms: PreparedArms) -> str | None:
    """The answer a continuation must reach: the (normalized) gold, else the arms' consensus answer."""
    return gold if gold is not None else arms.consensus_answer


def start_value(target: str, arms: PreparedArms) -> float:
    """``v_0``: the arm weight whose answer ≡ ``target``, over all arm weight (the arms are the arm
    model's own answers to the question alone)."""
    return s_end(target, arms)


def continuation_answer(prefix: str, continuation: str) -> str | None:
    """The final answer of a continued trajectory: ``parse_answer`` of prefix + continuation."""
    return parse_answer(prefix + continuation).value


def prefix_value(answers: Sequence[str | None], target: str) -> float:
    """``v_i``: the share of the continuations' answers that ≡ ``target``."""
    if not answers:
        raise ValueError("a prefix's value needs at least one continuation")
    hits = sum(1 for a in answers if a is not None and (a == target or answers_equal(a, target)))
    return hits / len(answers)


def s_prog(start: float, values: Sequence[float]) -> float:
    """``(1/(m+1)) Σ_{i=0..m} v_i`` with ``v_0 = start`` and ``values`` = v_1..v_m, in step order."""
    return (start + sum(values)) / (len(values) + 1)


def progress_reward(base_reward: float, s_prog: float, beta_progress: float) -> float:
    """``reward + β_progress·s_prog``: the scorer's reward (α·correctness + β·s_wm − γ·length_penalty)
    with the process term added."""
    return base_reward + beta_progress * s_prog

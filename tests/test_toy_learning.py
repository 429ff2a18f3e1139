"""Learning evidence on the offline toy world (issue 4): the whole loop, through the real CLIs.

One module-scoped run of ``experiments.toy_loop`` (``--quick`` settings, fixed seed, 1 torch thread
per process): toy base -> SFT -> reward service (toy base, live arms, toy config) on loopback ->
rollouts -> prefs -> DPO -> GRPO (Regime W reward over HTTP) -> eval on the dev split. The tests
then check, on the same dev problems, that

(a) SFT raises greedy dev accuracy over the toy base,
(b) GRPO with the Regime W reward raises it over SFT,
(c) DPO on the Regime W preference pairs raises it over SFT,
(d) label-free ``s_wm`` (rollouts re-scored WITHOUT gold_answer) ranks correct trajectories above
    wrong ones (AUROC),
(e) the one-seed slice of the reward ablation (docs/reward-ablation.md): GRPO run again from the same
    SFT adapter with label-free Regime W and with the majority vote (``experiments.ablation.grpo_control_runs``,
    trained beside the loop's DPO and GRPO while its service is up, evaluated beside its eval): label-free
    Regime W is not below the vote and raises accuracy over SFT.

Every process of the loop runs on pinned CPU kernels (``trainer.toy.determinism``) and starts from the
shipped toy base (``assets/toy_base``), so the counts are the same on one machine idle or loaded (a rerun
is bit for bit the same). Across CPU families they are not all the same: base, SFT and DPO are (295 / 316 /
343 of 800 on an AMD EPYC and on an Intel Xeon of the Sapphire Rapids kind), the GRPO runs are not (GRPO 341
vs 344, label-free 327 vs 326, majority 302 vs 321; docs/toy-results.md). On the CPUs' own kernels the same
seed gave GRPO - SFT = +6.9 points on the earlier sessions' machine and +1.0 on an AMD EPYC (issue 21).
The margins sit below the smallest gain measured on either CPU (docs/toy-results.md lists the runs), so the
tests still fail when learning does not happen.
What RL learns here is the habit the toy world plants (docs/toy-world.md): half of the SFT solutions
fold a multi-step computation into one expression, which the small model gets wrong far more often;
``test_rl_removes_the_folded_answers_sft_learned`` checks that mechanism directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from experiments.ablation import ControlRuns, grpo_control_runs
from experiments.toy_loop import Paths, label_free_auroc, run_toy_loop

#: a hang guard, not a bound: the module fixture runs the whole loop (CI's whole run may take 5400 s)
pytestmark = pytest.mark.timeout(5400)

SEED = 0
#: Minimum gains (absolute accuracy, 800 dev problems). Pinned kernels and the one sampler (fastgen's, issue 24),
#: seed 0 (this test's run; docs/toy-results.md): SFT - base = +2.6 points, DPO - SFT = +3.4, GRPO - SFT = +3.1,
#: AUROC of label-free s_wm 0.868; seeds 1 / 2 (the loop alone): SFT - base = +4.5 / +2.7, DPO - SFT = +3.1 / +2.9,
#: GRPO - SFT = +4.0 / +3.5. Before the one sampler (the trainer's own per-row generators), seed 0: +2.6 / +4.0 /
#: +3.0, AUROC 0.896; seeds 1 / 2: DPO - SFT = +2.1 / +4.0, GRPO - SFT = +4.0 / +2.3.
SFT_OVER_BASE = 0.005
GRPO_OVER_SFT = 0.02
DPO_OVER_SFT = 0.02
MIN_AUROC = 0.80
#: GRPO with label-free Regime W vs GRPO with the majority vote, same SFT adapter, seed 0. With the one sampler:
#: label-free Regime W - majority = +3.1 points (327 vs 302 of 800) on an AMD EPYC but +0.6 (326 vs 321) on an
#: Intel Xeon (Sapphire Rapids): after 150 steps the vote's own result moves by 19 problems with the CPU family,
#: so the claim tested here is "not below the vote" (the vote's collapse shows over longer runs: 3 seeds of 450
#: steps, docs/reward-ablation.md). Label-free Regime W - SFT = +1.4 / +1.25 (327 / 326 vs 316); before the one
#: sampler +4.4 and +2.6. The margin over SFT is 10-11 problems of 800, so the claim tested is "at least +1 point";
#: the issue's study bar (label-free >= SFT + 3) is not met by this row (docs/reward-ablation.md).
LABEL_FREE_OVER_MAJORITY = 0.0
LABEL_FREE_OVER_SFT = 0.01
MIN_DEV = 800
#: Runs side by side (1 torch thread each; the same adapters as one after the other, in less time on 2 cores):
#: GRPO, the two control GRPO runs and DPO, two at a time, the longest first (two rounds of GRPO, not three); then
#: the eval stage beside the controls' eval.
JOBS = 2


@pytest.fixture(scope="module")
def loop(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    workdir = tmp_path_factory.mktemp("toy-loop")

    controls: list[ControlRuns] = []

    def control_runs(url: str, key: str, paths: Paths) -> tuple[Callable[[], Any], ...]:
        controls.append(grpo_control_runs(url, key, paths, seed=SEED, rows=("regime_w_label_free", "majority")))
        return controls[0].tasks

    return run_toy_loop(
        workdir,
        seed=SEED,
        quick=True,
        threads=1,
        jobs=JOBS,
        verbose=False,
        more_rl=control_runs,
        before_stop=label_free_auroc,
        beside_eval=lambda: controls[0].evaluate(),
        say=lambda _: None,
    )


def _dev(loop: dict[str, Any]) -> dict[str, dict[str, float | int]]:
    dev = loop["table"]["gsm8k_dev"]
    assert set(dev) == {"base", "sft", "rl-dpo", "rl-grpo"}, dev
    assert all(cell["n"] >= MIN_DEV for cell in dev.values()), dev
    return dev


def test_sft_raises_dev_accuracy_over_the_toy_base(loop: dict[str, Any]) -> None:
    dev = _dev(loop)
    assert dev["sft"]["accuracy"] >= dev["base"]["accuracy"] + SFT_OVER_BASE, dev


def test_the_rl_stages_trained_on_regime_w_signals(loop: dict[str, Any]) -> None:
    grpo, dpo = loop["grpo"], loop["dpo"]
    assert grpo["global_step"] > 0 and len(grpo["reward_per_step"]) == grpo["global_step"], grpo
    assert all(r is not None for r in grpo["reward_per_step"]), grpo
    assert dpo["num_pairs"] >= 50 and dpo["global_step"] > 0, dpo
    assert loop["prefs"]["pairs_written"] == dpo["num_pairs"], (loop["prefs"], dpo)


def test_grpo_with_the_regime_w_reward_over_http_raises_it_over_sft(loop: dict[str, Any]) -> None:
    dev = _dev(loop)
    assert dev["rl-grpo"]["accuracy"] >= dev["sft"]["accuracy"] + GRPO_OVER_SFT, dev


def test_dpo_on_regime_w_pairs_raises_it_over_sft(loop: dict[str, Any]) -> None:
    dev = _dev(loop)
    assert dev["rl-dpo"]["accuracy"] >= dev["sft"]["accuracy"] + DPO_OVER_SFT, dev


def test_rl_removes_the_folded_answers_sft_learned(loop: dict[str, Any]) -> None:
    styles = loop["styles"]
    assert styles["base"]["folded_share"] < 0.05, styles  # the base's corpus is written one line per step
    assert styles["sft"]["folded_share"] > 0.25, styles  # SFT picked up the folded style of half its data
    # ... which is right far less often than one line per step
    assert styles["sft"]["folded_accuracy"] < styles["sft"]["stepwise_accuracy"] - 0.1, styles
    # measured over seeds 0/1/2: DPO keeps 43/37/49% of SFT's folded share, GRPO 22/18/22%
    for model in ("rl-dpo", "rl-grpo"):
        assert styles[model]["folded_share"] < 0.7 * styles["sft"]["folded_share"], (model, styles)


def test_label_free_s_wm_ranks_correct_trajectories_above_wrong_ones(loop: dict[str, Any]) -> None:
    measured = loop["before_stop"]
    assert measured["trajectories"] >= 200 and 0 < measured["correct"] < measured["trajectories"], measured
    assert measured["auroc_s_wm"] >= MIN_AUROC, measured


def test_label_free_regime_w_grpo_holds_against_the_majority_vote_and_beats_sft(loop: dict[str, Any]) -> None:
    controls, dev = loop["beside_eval"], _dev(loop)
    assert set(controls) == {"regime_w_label_free", "majority"}, controls
    assert all(cell["n"] >= MIN_DEV for cell in controls.values()), controls
    label_free, majority = controls["regime_w_label_free"]["accuracy"], controls["majority"]["accuracy"]
    assert label_free >= majority + LABEL_FREE_OVER_MAJORITY, (controls, dev["sft"])
    assert label_free >= dev["sft"]["accuracy"] + LABEL_FREE_OVER_SFT, (controls, dev["sft"])


def test_auroc_is_the_probability_a_positive_outranks_a_negative() -> None:
    from experiments.toy_loop import auroc

    assert auroc([0.1, 0.2, 0.8, 0.9], [False, False, True, True]) == 1.0
    assert auroc([0.9, 0.8, 0.2, 0.1], [False, False, True, True]) == 0.0
    assert auroc([0.5, 0.5, 0.5, 0.5], [False, True, False, True]) == 0.5
    assert auroc([0.1, 0.4, 0.35, 0.8], [False, False, True, True]) == 0.75
    with pytest.raises(ValueError, match="both classes"):
        auroc([0.1, 0.2], [True, True])

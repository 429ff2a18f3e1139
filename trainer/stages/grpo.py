"""Stage ``grpo``: online GRPO (TRL ``GRPOTrainer``) with the Regime W reward over HTTP, or a control.

Policy: the SFT adapter (``adapter_path``), trainable, on the quantized base; without an adapter a
fresh LoRA (``LoraArguments``) is put on the base. Dataset: the GSM8K train split with columns
``prompt`` (``build_prompt``: the same prompt as SFT, rollouts and eval), ``question``,
``gold_answer`` and ``id``. One reward function, by the recipe's ``reward``:

- ``regime_w`` (default): ``AsyncRegimeWReward`` over HTTP (``label_free: true`` leaves the gold out),
  which logs ``regime_w/s_end``, ``s_path``, ``s_cf``, ``s_wm``, ``correctness``, ``wait_s`` and
  ``http_calls`` per step through TRL's ``log_metric``;
- ``correctness``: answer == gold (``trainer.reward_modes``), no service;
- ``majority``: the label-free vote among the step's samples of each question, no service.

The mode is recorded where the run's results are: ``reward_mode.json`` in ``output_dir`` (written
before training), every checkpoint's ``trainer_state.json`` (a stateful callback) and the stage's
summary. The adapter is saved to ``output_dir`` (``checkpoints/lora_grpo/``) with the tokenizer.

With ``beta > 0`` TRL uses a frozen copy of the starting adapter (the SFT policy) as the reference.

With ``precompute_arms: true`` (the default) the stage first has the service generate and cache the
arms of the questions the run will draw (``POST /v1/arms/precompute``), so no step waits on arm
generation; the summary reports the counts, and the wait per step (``reward_wait_s_per_step``).

Generation: ``generation_engine: auto|hf|fast|vllm`` (``trainer.generation.engine_choice``; here ``hf``
is TRL's own generation, ``fast`` the merged bf16 copy decoded by fastgen, ``vllm`` TRL's vLLM mode,
``auto`` fast on CUDA and hf on the CPU) and ``grpo_policy_copy`` (``trainer.generation.grpo``).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from transformers.trainer_callback import ExportableState, TrainerCallback
from trl import GRPOConfig

from trainer.configs import (
    DataArguments,
    LoraArguments,
    ModelArguments,
    RewardServiceArguments,
    apply_cpu_precision_rule,
)
from trainer.generation.engine_choice import DEFAULT_GENERATION_ENGINE, GENERATION_ENGINE_HELP
from trainer.generation.grpo import DEFAULT_GRPO_POLICY_COPY, check_grpo_generation

__all__ = [
    "ARG_CLASSES",
    "GRPOStageConfig",
    "RewardModeCallback",
    "build_dataset",
    "plan",
    "precompute_arms",
    "questions_in_run_order",
    "reward_record",
    "run",
]


@dataclass
class GRPOStageConfig(GRPOConfig):
    """TRL's ``GRPOConfig`` with this stage's adapter directory; float32 on a CPU-only machine."""

    output_dir: str = field(
        default="checkpoints/lora_grpo", metadata={"help": "Where the GRPO adapter + tokenizer go."}
    )
    precompute_arms: bool = field(
        default=True,
        metadata={
            "help": "Before training, have the service generate and cache the arms of every question the "
            "run will draw (POST /v1/arms/precompute), so no GRPO step waits on arm generation."
        },
    )
    generation_engine: str = field(default=DEFAULT_GENERATION_ENGINE, metadata={"help": GENERATION_ENGINE_HELP})
    grpo_policy_copy: str = field(
        default=DEFAULT_GRPO_POLICY_COPY,
        metadata={
            "help": "generation_engine hf only: 'none' (TRL generates with the training model) or 'merged_bf16' "
            "(transformers generate on a bf16 copy of the policy, LoRA re-merged after each step; "
            "trainer.generation.grpo)."
        },
    )
    generation_static_cache: bool = field(
        default=True,
        metadata={"help": "grpo_policy_copy merged_bf16: static KV cache (transformers compiles the forward on GPU)."},
    )

    def __post_init__(self) -> None:
        apply_cpu_precision_rule(self)
        # generation_engine: vllm is TRL's vLLM mode: TRL reads use_vllm in its own __post_init__
        config: GRPOConfig = self  # TRL's field, read through TRL's type (mypy cannot type it on the subclass)
        config.use_vllm = check_grpo_generation(self.generation_engine, self.grpo_policy_copy, config.use_vllm)
        super().__post_init__()


log = logging.getLogger(__name__)

ARG_CLASSES: tuple[type, ...] = (ModelArguments, LoraArguments, DataArguments, RewardServiceArguments, GRPOStageConfig)

#: Where the stage records which reward trained the adapter.
REWARD_RECORD = "reward_mode.json"


def reward_record(reward_args: RewardServiceArguments) -> dict[str, Any]:
    """Which reward a run used: mode, label-free or not, and the service (only for ``regime_w``)."""
    from trainer.reward_modes import check_reward_mode, reward_label_free

    mode = check_reward_mode(reward_args.reward)
    return {
        "reward": mode,
        "label_free": reward_label_free(mode, reward_args.label_free),
        "service_url": reward_args.reward_url if mode == "regime_w" else None,
        "function": mode,  # the TRL reward function's __name__ (trainer.rewards.build_reward_functions)
    }


class RewardModeCallback(TrainerCallback, ExportableState):
    """Puts the reward record into every checkpoint's ``trainer_state.json`` (transformers'
    ``stateful_callbacks``, restored on ``--resume``), so a checkpoint says which reward made it."""

    def __init__(self, **record: Any) -> None:
        self.record = dict(record)

    def state(self) -> dict[str, Any]:
        return {"args": dict(self.record), "attributes": {}}


def _check(config: GRPOConfig) -> None:
    if config.per_device_train_batch_size % config.num_generations:
        raise ValueError(
            f"per_device_train_batch_size ({config.per_device_train_batch_size}) must be divisible by "
            f"num_generations ({config.num_generations})"
        )
    if config.reward_weights is not None and len(config.reward_weights) != 1:
        raise ValueError(
            f"reward_weights: the stage trains on one reward function (the recipe's `reward`), got "
            f"{config.reward_weights}; drop reward_weights (components are logged, not weighted)"
        )
    if config.output_dir in (None, "", "trainer_output"):
        raise ValueError("set output_dir (e.g. checkpoints/lora_grpo) so the adapter lands where later stages look")
    if config.use_vllm:
        from trainer.generation import vllm_available

        if not vllm_available():
            raise ValueError(
                "generation_engine: vllm (TRL's vLLM mode, use_vllm: true) needs vLLM installed and a CUDA GPU; "
                "use generation_engine: auto, fast or hf"
            )


def build_dataset(problems: list[Any], tokenizer: Any) -> Any:
    """A ``datasets.Dataset`` with ``prompt``, ``question``, ``gold_answer`` and ``id`` columns."""
    from datasets import Dataset

    from trainer.prompts import build_prompt

    if not problems:
        raise ValueError("no training problems for GRPO")
    return Dataset.from_list(
        [
            {"prompt": build_prompt(p.question, tokenizer), "question": p.question, "gold_answer": p.gold, "id": p.id}
            for p in problems
        ]
    )


def questions_in_run_order(trainer: Any, config: GRPOConfig) -> list[str]:
    """The distinct questions the run will draw, in order: with ``max_steps`` set, only the first
    ``max_steps x gradient_accumulation_steps x generation_batch_size`` draws of the trainer's own
    (seeded) sampler, so a short run does not wait for the arms of the whole split; else all."""
    dataset = trainer.train_dataset
    questions = dataset["question"]
    if config.max_steps is None or config.max_steps <= 0:
        return list(dict.fromkeys(questions))
    draws = config.max_steps * config.gradient_accumulation_steps * config.generation_batch_size
    try:
        sampler = trainer._get_train_sampler(dataset)  # a fresh sampler: the same seed, the same order
    except (AttributeError, TypeError) as exc:  # another TRL version: fall back to every question
        log.warning("cannot predict the GRPO sampling order (%s); precomputing every training question", exc)
        return list(dict.fromkeys(questions))
    order: dict[str, None] = {}
    taken = 0
    while taken < draws and len(order) < len(questions):
        epoch = list(iter(sampler))
        if not epoch:
            break
        for index in epoch[: draws - taken]:
            order.setdefault(questions[index], None)
        taken += len(epoch)
    return list(order)


def precompute_arms(client: Any, questions: list[str]) -> dict[str, Any]:
    """Fill the service's arm cache for ``questions`` before training (``POST /v1/arms/precompute``).

    Returns the counts and the seconds it took. A service without the endpoint (HTTP 404) is logged
    and skipped: training still works, its first steps just wait on arm generation.
    """
    from trainer.reward_client import RewardServiceHTTPError

    started = time.perf_counter()
    try:
        result = client.precompute(questions)
    except RewardServiceHTTPError as exc:
        if exc.status != 404:
            raise
        log.warning("the reward service has no arm precompute endpoint (%s); training without it", exc)
        return {"skipped": str(exc)}
    summary = {**result.model_dump(), "seconds": round(time.perf_counter() - started, 3)}
    log.info("arms precomputed: %s", summary)
    return summary


def plan(
    model_args: ModelArguments,
    lora_args: LoraArguments,
    data_args: DataArguments,
    reward_args: RewardServiceArguments,
    config: GRPOConfig,
) -> dict[str, Any]:
    _check(config)
    record = reward_record(reward_args)
    return {
        "stage": "grpo",
        "policy": {
            "base": model_args.model_name_or_path,
            "quantization": model_args.quantization,
            "adapter_path": model_args.adapter_path,
            "fresh_lora": None if model_args.adapter_path else {"r": lora_args.lora_r, "alpha": lora_args.lora_alpha},
        },
        "data": {
            "dataset": data_args.dataset,
            "split": "train",
            "split_file": data_args.split_file,
            "max_train_samples": data_args.max_train_samples,
            "columns": ["prompt", "question", "gold_answer", "id"],
        },
        "reward": {**record, "precompute_arms": config.precompute_arms and reward_args.reward == "regime_w"},
        "grpo": {
            "num_generations": config.num_generations,
            "per_device_train_batch_size": config.per_device_train_batch_size,
            "gradient_accumulation_steps": config.gradient_accumulation_steps,
            "max_completion_length": config.max_completion_length,
            "temperature": config.temperature,
            "top_p": config.top_p,
            "beta": config.beta,
            "loss_type": config.loss_type,
            "learning_rate": config.learning_rate,
            "max_steps": config.max_steps,
            "num_train_epochs": config.num_train_epochs,
            "use_vllm": config.use_vllm,
            "bf16": config.bf16,
            "generation_engine": getattr(config, "generation_engine", DEFAULT_GENERATION_ENGINE),
            "grpo_policy_copy": getattr(config, "grpo_policy_copy", DEFAULT_GRPO_POLICY_COPY),
        },
        "writes": config.output_dir,
    }


def run(
    model_args: ModelArguments,
    lora_args: LoraArguments,
    data_args: DataArguments,
    reward_args: RewardServiceArguments,
    config: GRPOConfig,
) -> dict[str, Any]:
    from trainer.checkpoints import resume_path
    from trainer.data import load_train_dev
    from trainer.generation.grpo import FastGenerationGRPOTrainer, fast_generation_config
    from trainer.modeling import load_policy, load_tokenizer, lora_config
    from trainer.reward_client import RewardClient
    from trainer.rewards import AsyncRegimeWReward, build_reward_functions

    _check(config)
    record = reward_record(reward_args)
    train, _ = load_train_dev(data_args)
    tokenizer = load_tokenizer(model_args)
    dataset = build_dataset(train, tokenizer)

    model = load_policy(model_args, trainable=True)
    peft_config = None if model_args.adapter_path else lora_config(lora_args)

    out = Path(config.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / REWARD_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    log.info("GRPO reward: %s", record)
    reward_funcs = build_reward_functions(reward_args)
    service_reward = reward_funcs[0] if isinstance(reward_funcs[0], AsyncRegimeWReward) else None
    try:
        trainer = FastGenerationGRPOTrainer(
            model=model,
            fast_generation=fast_generation_config(config),
            reward_funcs=reward_funcs,
            args=config,
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=[RewardModeCallback(**record)],
        )
        precomputed = None
        if config.precompute_arms and service_reward is not None:
            with RewardClient.from_args(reward_args) as client:
                precomputed = precompute_arms(client, questions_in_run_order(trainer, config))
            precomputed["of_dataset"] = len(dataset)
        result = trainer.train(resume_from_checkpoint=resume_path(config))
        trainer.save_model(str(out))
        tokenizer.save_pretrained(str(out))
    finally:
        if service_reward is not None:
            service_reward.close()
    logs = [entry for entry in trainer.state.log_history if "reward" in entry]
    components = (
        {
            name: [entry.get(f"regime_w/{name}") for entry in logs]
            for name in ("s_end", "s_path", "s_cf", "s_wm", "correctness")
        }
        if service_reward is not None
        else {}
    )
    return {
        "stage": "grpo",
        "adapter": str(out),
        "global_step": trainer.state.global_step,
        "train_loss": result.training_loss,
        "questions": len(dataset),
        "reward": record,
        "reward_per_step": [entry.get("reward") for entry in logs],
        # TRL's per-step spread of the rewards inside a group, and the share of groups whose samples all got the
        # same reward (no GRPO gradient there): a label-free reward that collapses drives the latter to 1
        "reward_std_per_step": [entry.get("reward_std") for entry in logs],
        "frac_reward_zero_std_per_step": [entry.get("frac_reward_zero_std") for entry in logs],
        "components_per_step": components,
        "precompute": precomputed,
        "reward_wait_s": round(service_reward.wait_seconds, 3) if service_reward is not None else 0.0,
        "reward_calls": service_reward.calls if service_reward is not None else 0,
        # per logged step: seconds waited on the service, its HTTP requests, and TRL's step_time
        "reward_wait_s_per_step": [entry.get("regime_w/wait_s") for entry in logs],
        "reward_http_calls_per_step": [entry.get("regime_w/http_calls") for entry in logs],
        "step_time_s_per_step": [entry.get("step_time") for entry in logs],
        "train_runtime_s": result.metrics.get("train_runtime"),
    }

"""Stage ``eval``: accuracy of base / SFT / RL on the GSM8K dev split and on GSM8K-Platinum.

Every model in ``eval_models`` (``{name, adapter_path}``; ``adapter_path`` null = the bare base) gets
one prompt per question (``build_prompt``) and one greedy generation. The answer is extracted and
compared with the gold by ``shared_schemas.answer`` (``parse_answer`` / ``answers_equal``).
Platinum rows its cleaning marked ``rejected`` are left out (``load_platinum``), as its rules say.

Writes, under ``eval_output_dir``: ``predictions.jsonl`` (one ``trainer.records.EvalPrediction`` per
model × question: ``model``, ``dataset``, ``id``, ``gold``, ``prediction``, ``correct``, ``format_ok``, ``output``),
``results.json`` (accuracy per model × dataset, with n), ``results.md`` (the table) and
``accuracy.png`` (bar chart).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.configs import DataArguments, ModelArguments
from trainer.generation.engine_choice import DEFAULT_GENERATION_ENGINE, GENERATION_ENGINE_HELP, check_generation_engine

__all__ = ["EvalArguments", "ARG_CLASSES", "EvalModel", "parse_eval_models", "plan", "run"]

DATASETS = ("gsm8k_dev", "gsm8k_test", "platinum")


@dataclass(frozen=True, slots=True)
class EvalModel:
    name: str
    adapter_path: str | None


def _default_models() -> list[Any]:
    return [
        {"name": "base", "adapter_path": None},
        {"name": "sft", "adapter_path": "checkpoints/lora_sft"},
        {"name": "rl", "adapter_path": "checkpoints/lora_rl"},
    ]


def parse_eval_models(entries: list[Any]) -> list[EvalModel]:
    """Models from the recipe (``{name, adapter_path}`` mappings) or CLI strings (``name[=adapter]``)."""
    models: list[EvalModel] = []
    for entry in entries:
        if isinstance(entry, EvalModel):
            model = entry
        elif isinstance(entry, dict):
            unknown = set(entry) - {"name", "adapter_path"}
            if "name" not in entry or unknown:
                raise ValueError(
                    f"eval_models entry {entry!r} must be {{name, adapter_path}} (unknown: {sorted(unknown)})"
                )
            path = entry.get("adapter_path")
            model = EvalModel(str(entry["name"]), None if path in (None, "", "null", "none") else str(path))
        elif isinstance(entry, str):
            name, _, path = entry.partition("=")
            model = EvalModel(name.strip(), path.strip() or None)
        else:
            raise ValueError(f"eval_models entry {entry!r} must be a mapping or 'name=adapter_path'")
        if not model.name:
            raise ValueError(f"eval_models entry {entry!r} has an empty name")
        models.append(model)
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ValueError(f"eval_models names must be unique, got {names}")
    if not models:
        raise ValueError("eval_models lists no model")
    return models


@dataclass
class EvalArguments:
    eval_models: list[str] = field(
        default_factory=_default_models,
        metadata={
            "help": "Models to evaluate: recipe mappings {name, adapter_path|null}, or on the CLI "
            "'name' / 'name=ADAPTER_DIR' strings."
        },
    )
    eval_datasets: list[str] = field(
        default_factory=lambda: ["gsm8k_dev", "platinum"],
        metadata={"help": f"Any of {DATASETS}."},
    )
    eval_output_dir: str = field(default="results/eval", metadata={"help": "Where results go."})
    max_new_tokens: int = field(default=1024, metadata={"help": "Generation budget per answer."})
    eval_batch_size: int = field(default=32, metadata={"help": "Prompts per generate call."})
    generation_engine: str = field(default=DEFAULT_GENERATION_ENGINE, metadata={"help": GENERATION_ENGINE_HELP})
    generation_backend: str | None = field(
        default=None, metadata={"help": "Removed: an error naming its generation_engine value when set."}
    )
    progress: bool = field(default=True, metadata={"help": "Show tqdm progress bars."})

    def __post_init__(self) -> None:
        self.models = parse_eval_models(list(self.eval_models))
        bad = [d for d in self.eval_datasets if d not in DATASETS]
        if bad or not self.eval_datasets:
            raise ValueError(f"eval_datasets must be a non-empty list of {DATASETS}, got {self.eval_datasets}")
        if self.max_new_tokens < 1 or self.eval_batch_size < 1:
            raise ValueError("max_new_tokens and eval_batch_size must be >= 1")
        check_generation_engine(self.generation_engine, removed_backend=self.generation_backend)


ARG_CLASSES: tuple[type, ...] = (ModelArguments, DataArguments, EvalArguments)


def _load_dataset(name: str, data_args: DataArguments) -> list[Any]:
    from trainer.data import load_platinum, load_test_problems, load_train_dev

    if name == "gsm8k_dev":
        return load_train_dev(data_args)[1]
    problems = load_test_problems(data_args) if name == "gsm8k_test" else load_platinum(data_args.platinum)
    return problems[: data_args.max_eval_samples] if data_args.max_eval_samples else problems


def plan(model_args: ModelArguments, data_args: DataArguments, args: EvalArguments) -> dict[str, Any]:
    out = Path(args.eval_output_dir)
    return {
        "stage": "eval",
        "base": model_args.model_name_or_path,
        "quantization": model_args.quantization,
        "models": [{"name": m.name, "adapter_path": m.adapter_path} for m in args.models],
        "datasets": {
            d: (data_args.platinum if d == "platinum" else data_args.test_dataset or data_args.dataset)
            for d in args.eval_datasets
        },
        "split_file": data_args.split_file,
        "max_eval_samples": data_args.max_eval_samples,
        "decoding": {"greedy": True, "samples": 1, "max_new_tokens": args.max_new_tokens},
        "writes": [str(out / n) for n in ("predictions.jsonl", "results.json", "results.md", "accuracy.png")],
    }


def _score(model_name: str, dataset: str, problem: Any, text: str) -> dict[str, Any]:
    from shared_schemas.answer import answers_equal, parse_answer
    from trainer.records import EvalPrediction

    parsed = parse_answer(text)
    return EvalPrediction(
        model=model_name,
        dataset=dataset,
        id=problem.id,
        gold=problem.gold,
        prediction=parsed.value,
        correct=answers_equal(parsed.value, problem.gold),
        format_ok=parsed.format_ok,
        output=text,
    ).model_dump()


class _Policies:
    """One (quantized) base in memory; each adapter is loaded onto it (LoRA weights are small) and
    switched on in turn.

    The bare base is the same model with every adapter disabled, so base, SFT and RL are compared on
    identical base weights, and the base is loaded once instead of once per model.
    """

    def __init__(self, model_args: ModelArguments) -> None:
        from trainer.modeling import load_base_model

        self.base = load_base_model(model_args, for_training=False)
        self.peft: Any = None

    @contextlib.contextmanager
    def use(self, spec: EvalModel) -> Iterator[Any]:
        if spec.adapter_path is None:
            if self.peft is None:
                yield self.base
            else:
                with self.peft.disable_adapter():
                    yield self.peft
            return
        if self.peft is None:
            from peft import PeftModel

            self.peft = PeftModel.from_pretrained(self.base, spec.adapter_path, adapter_name=spec.name)
        else:
            self.peft.load_adapter(spec.adapter_path, adapter_name=spec.name)
        self.peft.set_adapter(spec.name)
        self.peft.eval()
        yield self.peft

    def close(self) -> None:
        self.base = self.peft = None
        gc.collect()
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def run(model_args: ModelArguments, data_args: DataArguments, args: EvalArguments) -> dict[str, Any]:
    from tqdm.auto import tqdm

    from trainer.generation import VLLMGenerator, generate_texts, resolve_generation_engine
    from trainer.modeling import load_tokenizer
    from trainer.prompts import build_prompt
    from trainer.report import accuracy_cells, bar_chart, markdown_table

    for m in args.models:
        if m.adapter_path is not None and not (Path(m.adapter_path) / "adapter_config.json").is_file():
            raise FileNotFoundError(f"eval model {m.name!r}: no PEFT adapter at {m.adapter_path!r}")
    datasets = {d: _load_dataset(d, data_args) for d in args.eval_datasets}
    tokenizer = load_tokenizer(model_args)
    questions = [(d, p) for d, problems in datasets.items() for p in problems]
    prompts = [build_prompt(p.question, tokenizer) for _, p in questions]

    engine = resolve_generation_engine(args.generation_engine)
    vllm = VLLMGenerator(model_args.model_name_or_path) if engine == "vllm" else None
    policies = None if vllm is not None else _Policies(model_args)

    out_dir = Path(args.eval_output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    predictions_path = out_dir / "predictions.jsonl"
    records: list[dict[str, Any]] = []
    with predictions_path.open("w", encoding="utf-8") as f:
        for m in args.models:
            bar = tqdm(
                total=len(prompts),
                unit="q",
                desc=f"eval {m.name}",
                disable=not args.progress,
                dynamic_ncols=True,
                file=sys.stderr,
            )
            try:
                if vllm is not None:
                    from trainer.generation import SamplingSpec

                    gens = vllm.generate(
                        prompts,
                        [SamplingSpec()] * len(prompts),
                        max_new_tokens=args.max_new_tokens,
                        adapter_path=m.adapter_path,
                    )
                    bar.update(len(prompts))
                else:
                    assert policies is not None  # built whenever vLLM is not
                    with policies.use(m) as model:
                        gens = generate_texts(
                            model,
                            tokenizer,
                            prompts,
                            None,
                            max_new_tokens=args.max_new_tokens,
                            batch_size=args.eval_batch_size,
                            on_batch=bar.update,
                            engine=engine,
                        )
            finally:
                bar.close()
            for (dataset, problem), g in zip(questions, gens, strict=True):
                record = _score(m.name, dataset, problem, g.text)
                records.append(record)
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())

    if policies is not None:
        from trainer.generation import release_fast_engine

        release_fast_engine()
        policies.close()
    cells = accuracy_cells(records)
    table = markdown_table(cells)
    results = {
        "stage": "eval",
        "base": model_args.model_name_or_path,
        "models": [{"name": m.name, "adapter_path": m.adapter_path} for m in args.models],
        "decoding": {"greedy": True, "max_new_tokens": args.max_new_tokens},
        "results": [c.to_json() for c in cells],
        "predictions": str(predictions_path),
    }
    (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (out_dir / "results.md").write_text(
        f"# Evaluation\n\nBase `{model_args.model_name_or_path}`; one greedy generation per question.\n\n{table}",
        encoding="utf-8",
    )
    chart = bar_chart(cells, out_dir / "accuracy.png", title="GSM8K accuracy")
    print(table)
    return {**results, "results_md": str(out_dir / "results.md"), "chart": str(chart)}

"""The toy base model: a tiny Llama trained from scratch, on the CPU, on generated toy problems.

It plays the part of the real base model (DeepSeek-R1-Distill-Llama-8B) in the offline toy world:
every trainer stage and the reward service's ``hf`` backend load it with ``from_pretrained``.

* Tokenizer: a byte-level BPE trained with ``tokenizers`` on the generated problems and the prompt
  text, with every digit its own token (so arithmetic is learnable), a chat template, ``<pad>`` and
  ``</s>`` (EOS). It adds no BOS, so prompts tokenize the same with or without special tokens.
* Corpus: ``build_prompt(question, tokenizer)`` (THE trainer prompt) followed by a solution and EOS,
  from the ``pretrain`` split (disjoint from the trainer's train/dev and the held-out dev/test).
  A share of the solutions is deliberately imperfect — one step's result is off (and carried on
  to the final answer), or the answer is written in another format — and training stops early,
  so the base is weak but learnable: SFT on clean ``format_target`` solutions and RL can improve it.
* Cached: ``build_toy_base`` writes ``TOY_BASE.json`` (the cache key of the generator + every
  setting, and the measured accuracy) last; a second call with the same settings returns at once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.errors import StageError
from trainer.toy.determinism import PINNED_CPU_KERNELS
from trainer.toy.problems import GENERATOR_VERSION, Step, ToyProblem, make_splits, write_splits

__all__ = [
    "ToyBaseArguments",
    "ToyBaseResult",
    "ToyBaseTimeLimit",
    "CHAT_TEMPLATE",
    "MARKER_FILE",
    "cache_key",
    "kernel_pins",
    "build_toy_base",
    "load_cached",
    "noisy_solution",
    "train_tokenizer",
    "evaluate_accuracy",
]

log = logging.getLogger(__name__)

MARKER_FILE = "TOY_BASE.json"
#: Bump when the training code changes what a given configuration produces.
TRAINER_VERSION = "1"

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<|user|>", "<|assistant|>", "<|system|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'assistant' %}<|assistant|>{{ m['content'] }}{{ eos_token }}"
    "{% else %}<|{{ m['role'] }}|>{{ m['content'] }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@dataclass
class ToyBaseArguments:
    """Settings of the toy world's problems and of the toy base model's pre-training."""

    toy_data_dir: str = field(
        default="data/toy",
        metadata={"help": "Where the generated problems are written (train/dev/test/pretrain.jsonl)."},
    )
    toy_base_dir: str = field(default="checkpoints/toy_base", metadata={"help": "Where the toy base model is saved."})
    problems_seed: int = field(default=0, metadata={"help": "Seed of the problem generator."})
    n_train: int = field(default=4000, metadata={"help": "Problems in train.jsonl (the trainer's GSM8K train file)."})
    n_dev: int = field(default=300, metadata={"help": "Problems in dev.jsonl (held out)."})
    n_test: int = field(default=300, metadata={"help": "Problems in test.jsonl (held out)."})
    n_pretrain: int = field(default=20000, metadata={"help": "Problems in the base model's own corpus."})
    one_line_share: float = field(
        default=0.5,
        metadata={
            "help": "Share of the trainer's solutions (train/dev/test.jsonl) written as one folded "
            "expression instead of one line per step (trainer.toy.problems.STYLES)."
        },
    )
    number_scale: float = field(
        default=0.5, metadata={"help": "Shrink every number range of the problem templates by this factor (0, 1]."}
    )
    corpus_one_line_share: float = field(
        default=0.0, metadata={"help": "The same share in the base model's own corpus."}
    )
    vocab_size: int = field(default=768, metadata={"help": "BPE vocabulary size (digits stay single)."})
    hidden_size: int = field(default=96)
    num_layers: int = field(default=3)
    num_heads: int = field(default=4)
    intermediate_size: int = field(default=256)
    base_max_steps: int = field(
        default=800, metadata={"help": "Optimizer steps of pre-training (stopped early on purpose)."}
    )
    base_batch_size: int = field(default=32)
    base_learning_rate: float = field(default=3e-3)
    base_warmup_steps: int = field(default=50)
    base_weight_decay: float = field(default=0.01)
    base_seed: int = field(default=0, metadata={"help": "Seed of initialisation and batch order."})
    noise_wrong_step: float = field(
        default=0.2, metadata={"help": "Share of corpus solutions with one wrong step result."}
    )
    noise_other_format: float = field(
        default=0.2, metadata={"help": "Share of corpus solutions in another format (terse / 'The answer is')."}
    )
    loss_on_prompt: bool = field(
        default=False, metadata={"help": "Also train on the prompt tokens (default: solution only)."}
    )
    base_max_seconds: float | None = field(
        default=None,
        metadata={
            "help": "Optional limit on training time: a build that reaches it FAILS (nothing is saved) instead of "
            "saving a base trained for fewer steps than base_max_steps, so a loaded machine never yields another "
            "model. None: no limit."
        },
    )
    base_num_threads: int | None = field(
        default=None, metadata={"help": "torch.set_num_threads for training (None: leave as is)."}
    )
    eval_samples: int = field(default=300, metadata={"help": "Dev problems scored after training (0: skip)."})
    eval_max_new_tokens: int = field(default=160)
    eval_batch_size: int = field(default=64)
    base_device: str = field(
        default="cpu", metadata={"help": "Torch device of pre-training ('cpu', 'cuda'); part of the cache key."}
    )
    force: bool = field(default=False, metadata={"help": "Retrain even when the cache matches."})

    def __post_init__(self) -> None:
        for name in (
            "n_train",
            "n_dev",
            "n_test",
            "vocab_size",
            "hidden_size",
            "num_layers",
            "num_heads",
            "intermediate_size",
            "base_max_steps",
            "base_batch_size",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})")
        for name in ("noise_wrong_step", "noise_other_format", "one_line_share", "corpus_one_line_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if not 0.0 < self.number_scale <= 1.0:
            raise ValueError(f"number_scale must be in (0, 1], got {self.number_scale}")
        if self.n_pretrain <= 0:
            raise ValueError(f"n_pretrain must be positive, got {self.n_pretrain}")


# Settings that do not change the trained weights are left out of the cache key (the base is trained
# on the pretrain corpus only, so the style share of the trainer's files is not in it).
_NOT_IN_KEY = {
    "one_line_share",
    "toy_data_dir",
    "toy_base_dir",
    "base_max_seconds",
    "base_num_threads",
    "eval_samples",
    "eval_max_new_tokens",
    "eval_batch_size",
    "force",
}


def kernel_pins() -> dict[str, str | None]:
    """The CPU-kernel pins this process runs with (``trainer.toy.determinism``; None: not pinned). They
    decide the arithmetic, so a base built on other kernels is another base."""
    return {name: os.environ.get(name) for name in sorted(PINNED_CPU_KERNELS)}


def cache_key(args: ToyBaseArguments) -> str:
    """sha256 of the generator version, the trainer version, every weight-relevant setting and the CPU
    kernels' pins (``kernel_pins``)."""
    settings = {k: v for k, v in dataclasses.asdict(args).items() if k not in _NOT_IN_KEY}
    blob = json.dumps(
        {"generator": GENERATOR_VERSION, "trainer": TRAINER_VERSION, "settings": settings, "kernels": kernel_pins()},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()


class ToyBaseTimeLimit(StageError):
    """Pre-training reached ``base_max_seconds`` before ``base_max_steps``: nothing was saved."""


@dataclass(frozen=True)
class ToyBaseResult:
    """Where the base is, whether it came from the cache, and what was measured."""

    model_dir: Path
    data_dir: Path
    cached: bool
    meta: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        return {"model_dir": str(self.model_dir), "data_dir": str(self.data_dir), "cached": self.cached, **self.meta}


# --------------------------------------------------------------------------------------------
# Corpus


def _step_line(a: int, op: str, b: int, value: int, text: str) -> str:
    return text.format(eq=f"{a}{op}{b} = {value}")


def _apply(op: str, a: int, b: int) -> int:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    return a // b if b else 0


def noisy_solution(problem: ToyProblem, rng: random.Random) -> str:
    """The solution with one step's result off by a small amount, carried on consistently:
    later steps that used the true value use the wrong one (the final answer is wrong too)."""
    steps: list[Step] = list(problem.steps)
    bad = rng.randrange(len(steps))
    lines: list[str] = []
    replaced: dict[int, int] = {}
    for i, s in enumerate(steps):
        a, b = replaced.get(s.a, s.a), replaced.get(s.b, s.b)
        true_value = s.result
        value = _apply(s.op, a, b)
        if i == bad:
            delta = rng.choice([-10, -2, -1, 1, 2, 10, rng.randint(3, 9)])
            value = value + delta if value + delta >= 0 else value + abs(delta)
        if value != true_value:
            replaced[true_value] = value
        lines.append(_step_line(a, s.op, b, value, s.text))
    lines.append(f"#### {value}")
    return "\n".join(lines)


def other_format_solution(problem: ToyProblem, rng: random.Random) -> str:
    """A correct solution in another format: bare equations, or 'The answer is N.' at the end."""
    if rng.random() < 0.5:
        eqs = [f"{s.a}{s.op}{s.b} = {s.result}" for s in problem.steps]
        return "\n".join(eqs + [f"#### {problem.answer_value}"])
    lines = [s.line(annotate=False) for s in problem.steps]
    return "\n".join(lines + [f"The answer is {problem.answer_value}."])


def corpus_solution(problem: ToyProblem, rng: random.Random, args: ToyBaseArguments) -> str:
    u = rng.random()
    if u < args.noise_wrong_step:
        return noisy_solution(problem, rng)
    if u < args.noise_wrong_step + args.noise_other_format:
        return other_format_solution(problem, rng)
    return problem.solution(annotate=False)


# --------------------------------------------------------------------------------------------
# Tokenizer


def train_tokenizer(texts: list[str], vocab_size: int) -> Any:
    """A byte-level BPE over ``texts`` with single-digit tokens, as a ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


# --------------------------------------------------------------------------------------------
# Training


def _encode(
    tokenizer: Any, prompts: list[str], targets: list[str], loss_on_prompt: bool
) -> list[tuple[list[int], int]]:
    """Token ids of prompt + target + EOS, and where the loss starts."""
    eos = tokenizer.eos_token_id
    p_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    t_ids = tokenizer(targets, add_special_tokens=False)["input_ids"]
    return [(p + t + [eos], 0 if loss_on_prompt else len(p)) for p, t in zip(p_ids, t_ids, strict=True)]


def _batch(rows: list[tuple[list[int], int]], pad_id: int) -> tuple[Any, Any, Any]:
    import torch

    width = max(len(ids) for ids, _ in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for r, (ids, start) in enumerate(rows):
        n = len(ids)
        input_ids[r, :n] = torch.tensor(ids)
        attention[r, :n] = 1
        labels[r, start:n] = input_ids[r, start:n]
    return input_ids, attention, labels


def _train(model: Any, rows: list[tuple[list[int], int]], pad_id: int, args: ToyBaseArguments) -> dict[str, Any]:
    import torch

    rng = random.Random(args.base_seed)
    opt = torch.optim.AdamW(
        model.parameters(), lr=args.base_learning_rate, weight_decay=args.base_weight_decay, betas=(0.9, 0.98)
    )

    def lr_at(step: int) -> float:
        if step < args.base_warmup_steps:
            return (step + 1) / args.base_warmup_steps
        progress = (step - args.base_warmup_steps) / max(1, args.base_max_steps - args.base_warmup_steps)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    order: list[int] = []
    losses: list[float] = []
    start = time.perf_counter()
    steps_done, tokens = 0, 0
    for step in range(args.base_max_steps):
        if args.base_max_seconds is not None and time.perf_counter() - start > args.base_max_seconds:
            raise ToyBaseTimeLimit(
                f"toy base: base_max_seconds={args.base_max_seconds:g} reached after {step} of "
                f"{args.base_max_steps} steps; nothing saved (raise or drop the limit: the steps, not the clock, "
                "define the base)"
            )
        if len(order) < args.base_batch_size:
            more = list(range(len(rows)))
            rng.shuffle(more)
            order.extend(more)
        idx, order = order[: args.base_batch_size], order[args.base_batch_size :]
        input_ids, attention, labels = (t.to(args.base_device) for t in _batch([rows[i] for i in idx], pad_id))
        out = model(input_ids=input_ids, attention_mask=attention, labels=labels)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(out.loss.item())
        tokens += int(attention.sum())
        steps_done = step + 1
        if steps_done % 100 == 0:
            log.info(
                "toy base: step %d loss %.4f (%.0f s)",
                steps_done,
                sum(losses[-100:]) / len(losses[-100:]),
                time.perf_counter() - start,
            )
    model.eval()
    seconds = time.perf_counter() - start
    tail = losses[-50:] or [float("nan")]
    return {
        "train_steps": steps_done,
        "train_seconds": round(seconds, 1),
        "train_tokens": tokens,
        "final_loss": round(sum(tail) / len(tail), 4),
    }


def evaluate_accuracy(
    model: Any, tokenizer: Any, problems: list[ToyProblem], *, max_new_tokens: int = 160, batch_size: int = 64
) -> dict[str, Any]:
    """Greedy accuracy with THE prompt and the answer-format contract, as the eval stage scores."""
    from shared_schemas.answer import answers_equal, extract_answer, gold_answer
    from trainer.generation import generate_texts
    from trainer.prompts import build_prompt

    prompts = [build_prompt(p.question, tokenizer) for p in problems]
    gens = generate_texts(model, tokenizer, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    correct_by_steps: dict[int, list[int]] = {}
    correct = 0
    for p, g in zip(problems, gens, strict=True):
        ok = answers_equal(extract_answer(g.text), gold_answer(p.solution()))
        correct += ok
        correct_by_steps.setdefault(len(p.steps), []).append(int(ok))
    return {
        "dev_accuracy": round(correct / max(1, len(problems)), 4),
        "dev_samples": len(problems),
        "dev_accuracy_by_steps": {str(k): round(sum(v) / len(v), 4) for k, v in sorted(correct_by_steps.items())},
        "example_completion": gens[0].text if gens else "",
    }


# --------------------------------------------------------------------------------------------
# Entry points


def load_cached(args: ToyBaseArguments) -> dict[str, Any] | None:
    """The saved metadata when ``toy_base_dir`` holds a base built with these settings, else None."""
    marker = Path(args.toy_base_dir) / MARKER_FILE
    if not marker.is_file():
        return None
    try:
        meta = json.loads(marker.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if meta.get("stopped_by_time_limit") or meta.get("train_steps") != args.base_max_steps:
        return None  # a base of older builds cut short by a wall-clock limit: not the base these settings describe
    return meta if meta.get("cache_key") == cache_key(args) else None


def _data_is_current(args: ToyBaseArguments) -> bool:
    meta_file = Path(args.toy_data_dir) / "TOY_PROBLEMS.json"
    if not meta_file.is_file():
        return False
    meta = json.loads(meta_file.read_text())
    want = {
        "generator_version": GENERATOR_VERSION,
        "seed": args.problems_seed,
        "n_train": args.n_train,
        "n_dev": args.n_dev,
        "n_test": args.n_test,
        "n_pretrain": args.n_pretrain,
        "one_line_share": args.one_line_share,
        "pretrain_one_line_share": args.corpus_one_line_share,
        "number_scale": args.number_scale,
    }
    return all(meta.get(k) == v for k, v in want.items())


def build_toy_base(args: ToyBaseArguments) -> ToyBaseResult:
    """Generate the problems (if needed) and train the toy base (unless cached); see the module doc."""
    data_dir, model_dir = Path(args.toy_data_dir), Path(args.toy_base_dir)
    splits = None
    if not _data_is_current(args):
        write_splits(
            data_dir,
            args.problems_seed,
            n_train=args.n_train,
            n_dev=args.n_dev,
            n_test=args.n_test,
            n_pretrain=args.n_pretrain,
            one_line_share=args.one_line_share,
            pretrain_one_line_share=args.corpus_one_line_share,
            number_scale=args.number_scale,
        )
    if not args.force:
        meta = load_cached(args)
        if meta is not None:
            return ToyBaseResult(model_dir=model_dir, data_dir=data_dir, cached=True, meta=meta)

    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from trainer.prompts import build_messages, build_prompt

    splits = make_splits(
        args.problems_seed,
        n_train=args.n_train,
        n_dev=args.n_dev,
        n_test=args.n_test,
        n_pretrain=args.n_pretrain,
        one_line_share=args.one_line_share,
        pretrain_one_line_share=args.corpus_one_line_share,
        number_scale=args.number_scale,
    )
    corpus_rng = random.Random(args.base_seed * 1_000_003 + 17)
    targets = [corpus_solution(p, corpus_rng, args) for p in splits.pretrain]
    tok_texts = [m["content"] for p in splits.pretrain for m in build_messages(p.question)] + targets
    tokenizer = train_tokenizer(tok_texts, args.vocab_size)
    prompts = [build_prompt(p.question, tokenizer) for p in splits.pretrain]
    rows = _encode(tokenizer, prompts, targets, args.loss_on_prompt)

    old_threads = torch.get_num_threads()
    if args.base_num_threads:
        torch.set_num_threads(args.base_num_threads)
    try:
        torch.manual_seed(args.base_seed)
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=args.hidden_size,
            intermediate_size=args.intermediate_size,
            num_hidden_layers=args.num_layers,
            num_attention_heads=args.num_heads,
            num_key_value_heads=args.num_heads,
            max_position_embeddings=512,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            tie_word_embeddings=True,
        )
        model = LlamaForCausalLM(config).to(args.base_device)
        n_params = sum(p.numel() for p in model.parameters())
        stats = _train(model, rows, tokenizer.pad_token_id, args)
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.generation_config.eos_token_id = tokenizer.eos_token_id
        model.generation_config.bos_token_id = tokenizer.bos_token_id
        evaluation: dict[str, Any] = {}
        if args.eval_samples > 0:
            t0 = time.perf_counter()
            evaluation = evaluate_accuracy(
                model,
                tokenizer,
                splits.dev[: args.eval_samples],
                max_new_tokens=args.eval_max_new_tokens,
                batch_size=args.eval_batch_size,
            )
            evaluation["eval_seconds"] = round(time.perf_counter() - t0, 1)
    finally:
        torch.set_num_threads(old_threads)

    if model_dir.exists():
        shutil.rmtree(model_dir)
    model_dir.mkdir(parents=True)
    model.to("cpu").save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    meta = {
        "cache_key": cache_key(args),
        "generator_version": GENERATOR_VERSION,
        "settings": {k: v for k, v in dataclasses.asdict(args).items() if k != "force"},
        "num_parameters": n_params,
        "vocab_size": len(tokenizer),
        "torch_threads": args.base_num_threads or old_threads,
        "cpu_kernels": kernel_pins(),
        **stats,
        **evaluation,
    }
    (model_dir / MARKER_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    return ToyBaseResult(model_dir=model_dir, data_dir=data_dir, cached=False, meta=meta)

"""Stage ``toy-base``: generate the toy problems and train the toy base model (offline toy world).

``regime-w-train toy-base --config recipes/toy/toy_base.yaml`` writes ``data/toy/*.jsonl`` and
``checkpoints/toy_base/`` (a tiny Llama + tokenizer, loadable with ``from_pretrained``); every other
stage then runs on them exactly as on GSM8K and DeepSeek-R1-Distill-Llama-8B. Cached: a second run
with the same settings returns at once. See ``trainer/toy/base.py`` and ``docs/toy-world.md``.
"""

from __future__ import annotations

from typing import Any

from trainer.toy.base import ToyBaseArguments, build_toy_base, cache_key, load_cached

__all__ = ["ARG_CLASSES", "plan", "run"]

ARG_CLASSES: tuple[type, ...] = (ToyBaseArguments,)


def plan(args: ToyBaseArguments) -> dict[str, Any]:
    """The resolved plan: where problems and the model go, the cache key, and whether it is cached."""
    return {
        "toy_data_dir": args.toy_data_dir,
        "toy_base_dir": args.toy_base_dir,
        "cache_key": cache_key(args),
        "cached": load_cached(args) is not None and not args.force,
        "splits": {"train": args.n_train, "dev": args.n_dev, "test": args.n_test, "pretrain": args.n_pretrain},
        "model": {
            "hidden_size": args.hidden_size,
            "num_layers": args.num_layers,
            "num_heads": args.num_heads,
            "intermediate_size": args.intermediate_size,
            "vocab_size": args.vocab_size,
        },
        "training": {
            "max_steps": args.base_max_steps,
            "batch_size": args.base_batch_size,
            "learning_rate": args.base_learning_rate,
            "seed": args.base_seed,
            "noise_wrong_step": args.noise_wrong_step,
            "noise_other_format": args.noise_other_format,
        },
    }


def run(args: ToyBaseArguments) -> dict[str, Any]:
    """Build (or reuse) the toy problems and base; return where they are and what was measured."""
    result = build_toy_base(args)
    summary = result.summary()
    summary.pop("settings", None)
    return summary

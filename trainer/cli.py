"""``regime-w-train <stage> --config RECIPE.yaml [--dry-run] [--key value ...]``.

The recipe YAML sets the stage's arguments (TRL's ``TrlParser`` conventions, including an optional
``env:`` mapping); explicit ``--key value`` flags override it. ``--dry-run`` prints the resolved
plan as JSON and loads no weights and no data; otherwise the stage runs and its summary (where the
artifacts went) is printed as JSON. ``--resume`` (sft, dpo, grpo) continues from the newest
checkpoint under the stage's ``output_dir`` (``trainer.checkpoints``).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import warnings
from collections.abc import Sequence
from typing import Any

from trainer import __version__
from trainer.checkpoints import apply_resume
from trainer.stages import STAGE_HELP, STAGES, load_stage

__all__ = ["main", "parse_stage_args"]

_DRY_RUN_FLAGS = ("--dry-run", "--dry_run")
_RESUME_FLAG = "--resume"
#: what the `trainer` extra installs; the light (client-only) install has none of it
_TRAINING_STACK = {"torch", "transformers", "trl", "peft", "datasets", "accelerate", "bitsandbytes", "yaml", "tqdm"}


def _top_parser() -> argparse.ArgumentParser:
    epilog = "stages:\n" + "\n".join(f"  {name:<9} {STAGE_HELP.get(name, '')}" for name in STAGES)
    parser = argparse.ArgumentParser(
        prog="regime-w-train",
        description="Regime W trainer: QLoRA SFT, rollouts, preference pairs, DPO, GRPO, eval, export.",
        epilog=epilog + "\n\nRun `regime-w-train <stage> --help` for a stage's arguments.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("stage", choices=list(STAGES), metavar="stage", help=", ".join(STAGES))
    return parser


def _recipe_path(args: Sequence[str]) -> str | None:
    """The value of ``--config PATH`` / ``--config=PATH`` in ``args``, if any."""
    for i, arg in enumerate(args):
        if arg == "--config" and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
    return None


def check_recipe(path: str) -> None:
    """A recipe must be readable YAML whose top level is a mapping; else ``ValueError`` (one line,
    naming the file) or ``FileNotFoundError``, which ``main`` reports with exit status 2."""
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such recipe file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read the recipe: {exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or type(exc).__name__
        raise ValueError(f"{path}: not valid YAML{where}: {' '.join(str(problem).split())}") from None
    if data is not None and not isinstance(data, dict):
        raise ValueError(f"{path}: a recipe is a YAML mapping of argument names to values, not a {type(data).__name__}")


def parse_stage_args(stage: str, argv: Sequence[str]) -> tuple[Any, ...]:
    """Parse a stage's ``ARG_CLASSES`` from ``--config YAML`` and flags (flags win)."""
    from trl import TrlParser

    module = load_stage(stage)
    parser = TrlParser(module.ARG_CLASSES, prog=f"regime-w-train {stage}")
    parser.add_argument("--config", help="recipe YAML (flags given here override it)")
    parser.add_argument(*_DRY_RUN_FLAGS, action="store_true", help="print the resolved plan; load no weights or data")
    parser.add_argument(
        _RESUME_FLAG,
        action="store_true",
        help="continue from the newest checkpoint under output_dir (stages that train: sft, dpo, grpo)",
    )
    args = [a for a in argv if a not in (*_DRY_RUN_FLAGS, _RESUME_FLAG)]
    recipe = _recipe_path(args)
    if recipe is not None:
        check_recipe(recipe)
    try:
        parsed = parser.parse_args_and_config(args=args)
    except ValueError as exc:  # TrlParser: "Unknown arguments from config file: ['--key', 'value']"
        if recipe is None or "config file" not in str(exc):
            raise
        unknown = [a[2:] for a in re.findall(r"'(--[^']+)'", str(exc))]
        raise ValueError(
            f"{recipe}: unknown key(s) {', '.join(unknown) or '?'}: not an argument of stage {stage!r} "
            f"(see regime-w-train {stage} --help)"
        ) from None
    # The trailing namespace holds --config/--dry-run (consumed above); keep the dataclasses.
    return tuple(parsed[: len(module.ARG_CLASSES)])


#: bitsandbytes, imported on a CPU with AVX512-BF16 (e.g. AMD EPYC Zen 4, Intel Sapphire Rapids), looks for a
#: hub kernel (the ``kernels`` package, which loads code from a hub at run time) and logs this warning before
#: every stage when it is missing; it then computes 4-bit layers with its own CPU code, which is what every
#: CPU run of this project uses. Nothing to act on, so it is not shown (README, "Tests").
BNB_HUB_KERNEL_WARNING = "Failed to load CPU gemm_4bit_forward from kernels-community"
BNB_CPU_LOGGER = "bitsandbytes.backends.cpu.ops"


class _DropPrefix(logging.Filter):
    """Drops the records of one logger whose message starts with ``prefix``; the others pass."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


def _quiet_known_warnings() -> None:
    # TRL configs still use the transformers-5 deprecated alias; nothing a user can act on.
    warnings.filterwarnings("ignore", message=r"`gradient_checkpointing\w*` is deprecated")
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated")
    bnb = logging.getLogger(BNB_CPU_LOGGER)
    if not any(isinstance(f, _DropPrefix) and f.prefix == BNB_HUB_KERNEL_WARNING for f in bnb.filters):
        bnb.addFilter(_DropPrefix(BNB_HUB_KERNEL_WARNING))


def main(argv: Sequence[str] | None = None) -> int:
    _quiet_known_warnings()
    argv = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    if not argv or argv[0].startswith("-"):
        top.parse_args(argv)  # --help / --version exit here; anything else is an error
        top.error("a stage is required")
    stage, rest = argv[0], argv[1:]
    if stage not in STAGES:
        top.error(f"unknown stage {stage!r} (choose from {', '.join(STAGES)})")
    dry_run = any(flag in rest for flag in _DRY_RUN_FLAGS)
    resume = _RESUME_FLAG in rest
    try:
        module = load_stage(stage)
    except ImportError as exc:
        hint = ""
        if getattr(exc, "name", None) and str(exc.name).split(".")[0] in _TRAINING_STACK:
            hint = (
                " (the light install has no training stack: install the trainer wheel with its extra,"
                ' pip install "dist/regime_w_trainer-<version>-py3-none-any.whl[trainer]")'
            )
        print(f"regime-w-train: stage {stage!r} is not available: {exc}{hint}", file=sys.stderr)
        return 2
    try:
        parsed = parse_stage_args(stage, rest)
        resumed_from = apply_resume(parsed, resume=resume)
        resolved = module.plan(*parsed)  # validates the plan before anything heavy starts
        if resumed_from is not None:
            resolved["resume_from_checkpoint"] = resumed_from
    except (ValueError, FileNotFoundError, FileExistsError) as exc:
        print(f"regime-w-train {stage}: invalid arguments: {exc}", file=sys.stderr)
        return 2
    if dry_run:
        print(json.dumps({"stage": stage, "dry_run": True, **resolved}, indent=2, default=str))
        return 0
    from trainer.errors import TrainerError

    try:
        result = module.run(*parsed)
    except TrainerError as exc:  # StageError, RewardServiceError: a message for the user
        print(f"regime-w-train {stage}: {exc}", file=sys.stderr)
        return 1
    if resumed_from is not None:
        result = {**result, "resumed_from": resumed_from}
    print(json.dumps({"stage": stage, **result}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())

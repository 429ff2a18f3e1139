"""Build the shipped toy base (``assets/toy_base/``): the recipe's toy base, trained with the pinned CPU kernels.

The toy world's numbers are the same on every x86-64 machine (``trainer.toy.determinism``), so its base
model, the most expensive step of the loop (800 pre-training steps: about 6.5 CPU-minutes on the pinned
kernels), is built once and shipped; ``experiments.toy_loop`` starts from it when the settings match (its
``TOY_BASE.json`` cache key covers the generator, the trainer, every setting and the kernel pins) and
trains a new one otherwise. This script runs the real stage and copies its output:

    python scripts/toy_base_asset.py                 # build in a temporary folder, then write assets/toy_base/
    python scripts/toy_base_asset.py --check         # rebuild and compare with the shipped weights (bit for bit)

``tests/test_toy_base.py`` checks in the default suite that the shipped marker matches the recipe, and
(marked slow) that a rebuild reproduces the shipped weights.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from experiments.toy_loop import RECIPES, SHIPPED_BASE  # noqa: E402
from trainer.toy.base import MARKER_FILE, ToyBaseArguments, cache_key  # noqa: E402 - the checkout, not installed
from trainer.toy.determinism import PINNED_CPU_KERNELS, subprocess_env  # noqa: E402

#: what is shipped (the marker last); the weights' digest goes into the marker as ``weights_sha256``
FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
)
#: the paths a build records are its own folders: shipped as the recipe's relative defaults
RELATIVE = {"toy_data_dir": "data/toy", "toy_base_dir": "checkpoints/toy_base"}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build(workdir: Path) -> Path:
    """``regime-w-train toy-base`` with the recipe, pinned kernels and one thread, into ``workdir``."""
    out = workdir / "toy_base"
    cmd = [
        sys.executable,
        "-m",
        "trainer.cli",
        "toy-base",
        "--config",
        str(RECIPES / "toy_base.yaml"),
        "--toy_data_dir",
        str(workdir / "data"),
        "--toy_base_dir",
        str(out),
        "--eval_samples",
        "0",
        "--base_num_threads",
        "1",
        "--force",
        "true",
    ]
    subprocess.run(cmd, cwd=ROOT, env=subprocess_env(1), check=True)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="rebuild and compare with the shipped weights")
    parser.add_argument("--from", dest="source", default=None, help="a folder the stage built (skip the build)")
    args = parser.parse_args()
    os.environ.update(PINNED_CPU_KERNELS)  # the key of a pinned build (``cache_key`` reads the pins)
    with tempfile.TemporaryDirectory(prefix="toy-base-asset-") as tmp:
        built = Path(args.source) if args.source else build(Path(tmp))
        digest = sha256(built / "model.safetensors")
        if args.check:
            shipped = json.loads((SHIPPED_BASE / MARKER_FILE).read_text())["weights_sha256"]
            same = digest == shipped
            print(f"rebuilt weights {digest[:16]}, shipped {shipped[:16]}: {'identical' if same else 'DIFFERENT'}")
            return 0 if same else 1
        meta = json.loads((built / MARKER_FILE).read_text())
        if meta.get("cpu_kernels") != dict(sorted(PINNED_CPU_KERNELS.items())):
            print(f"{built} was not built on the pinned kernels: {meta.get('cpu_kernels')}", file=sys.stderr)
            return 2
        meta["settings"].update(RELATIVE)
        meta["cache_key"] = cache_key(ToyBaseArguments(**{**meta["settings"], "force": False}))
        meta["weights_sha256"] = digest
        if SHIPPED_BASE.exists():
            shutil.rmtree(SHIPPED_BASE)
        SHIPPED_BASE.mkdir(parents=True)
        for name in FILES:
            shutil.copy2(built / name, SHIPPED_BASE / name)
        (SHIPPED_BASE / MARKER_FILE).write_text(json.dumps(meta, indent=2) + "\n")
        print(f"wrote {SHIPPED_BASE.relative_to(ROOT)} (weights sha256 {digest[:16]}, key {meta['cache_key'][:16]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

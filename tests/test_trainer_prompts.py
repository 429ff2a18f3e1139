"""trainer.prompts: the one prompt (with and without a chat template) and the SFT target."""

from __future__ import annotations

from pathlib import Path

import pytest
from tokenizers.processors import TemplateProcessing
from transformers import AutoTokenizer

from trainer.prompts import (
    INSTRUCTION,
    build_messages,
    build_prompt,
    completion_separator,
    format_target,
)

QUESTION = (
    "Weng earns $12 an hour for babysitting. Yesterday, she just did 50 minutes of babysitting. How much did she earn?"
)
SOLUTION = (
    "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\n"
    "Working 50 minutes, she earned 0.2 x 50 = $<<0.2*50=10>>10.\n#### 10"
)


@pytest.fixture()
def tokenizer(tiny_model_dir: Path):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_messages_are_one_user_turn_without_system_prompt() -> None:
    messages = build_messages("  What is 6 times 7?  ")
    assert messages == [
        {"role": "user", "content": f"What is 6 times 7?\n{INSTRUCTION}"},
    ]
    assert INSTRUCTION == "Please reason step by step, and put your final answer within \\boxed{}."


def test_prompt_uses_the_chat_template_with_generation_prompt(tokenizer) -> None:
    assert tokenizer.chat_template
    prompt = build_prompt(QUESTION, tokenizer)
    assert prompt == f"<|user|>{QUESTION}\n{INSTRUCTION}<|end|>\n<|assistant|>"
    assert "system" not in prompt
    assert completion_separator(tokenizer) == ""


def test_prompt_without_chat_template_is_plain_text(tokenizer) -> None:
    tokenizer.chat_template = None
    prompt = build_prompt(QUESTION, tokenizer)
    assert prompt == f"Question: {QUESTION}\nAnswer:"
    assert completion_separator(tokenizer) == " "


def test_prompt_carries_exactly_one_bos_when_template_and_tokenizer_both_add_it(tokenizer) -> None:
    # A Llama/DeepSeek-style tokenizer: the template writes BOS and tokenizing adds it again.
    tokenizer.chat_template = "{{ bos_token }}" + tokenizer.chat_template
    tokenizer._tokenizer.post_processor = TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tokenizer.bos_token_id)]
    )
    prompt = build_prompt(QUESTION, tokenizer)
    ids = tokenizer(prompt)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id
    assert ids.count(tokenizer.bos_token_id) == 1
    assert prompt.startswith("<|user|>")


def test_target_drops_calculator_annotations_and_keeps_the_answer_line() -> None:
    target = format_target(SOLUTION)
    assert target == ("Weng earns 12/60 = $0.2 per minute.\nWorking 50 minutes, she earned 0.2 x 50 = $10.\n#### 10")
    assert "<<" not in target and ">>" not in target
    assert target.splitlines()[-1] == "#### 10"


def test_target_closes_an_open_think_block_before_the_answer():
    from shared_schemas.answer import parse_answer
    from trainer.prompts import format_target, opens_think

    solution = "She sold 48/2 = <<48/2=24>>24 in May.\nIn all 48+24 = <<48+24=72>>72.\n#### 72"
    r1_prompt = "<｜begin▁of▁sentence｜><｜User｜>How many?<｜Assistant｜><think>\n"
    assert opens_think(r1_prompt) and not opens_think("Question: How many?\nAnswer:")
    target = format_target(solution, close_think=True)
    assert target == "She sold 48/2 = 24 in May.\nIn all 48+24 = 72.\n</think>\n\n#### 72"
    parsed = parse_answer(target)
    assert parsed.value == "72" and parsed.format_ok
    assert format_target(solution) == "She sold 48/2 = 24 in May.\nIn all 48+24 = 72.\n#### 72"


def test_end_of_turn_is_what_the_template_writes_after_an_assistant_turn(tokenizer) -> None:
    from trainer.prompts import end_of_turn

    # The tiny template closes a turn with <|end|>, which is not its EOS (</s>): like Llama 3's <|eot_id|>.
    assert end_of_turn(tokenizer) == "<|end|>" != tokenizer.eos_token
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{{ eos_token }}{% endfor %}"
    assert end_of_turn(tokenizer) == "</s>"
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}{% endfor %}"  # writes nothing after
    assert end_of_turn(tokenizer) == "</s>"
    tokenizer.chat_template = None
    assert end_of_turn(tokenizer) == "</s>"


def test_sft_target_ends_with_the_end_of_turn_and_generation_stops_there(tokenizer, tiny_model_dir) -> None:
    from transformers import AutoModelForCausalLM

    from trainer.data import Problem
    from trainer.generation import stop_token_ids
    from trainer.stages.sft import build_sft_records

    problem = Problem(id="p-0", question=QUESTION, solution=SOLUTION, gold="10")
    (record,) = build_sft_records([problem], tokenizer)
    assert record["completion"].endswith("#### 10<|end|>")
    end_id = tokenizer.convert_tokens_to_ids("<|end|>")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert stop_token_ids(model, tokenizer) == [tokenizer.eos_token_id, end_id]
    from trainer.modeling import stop_on_end_of_turn

    stop_on_end_of_turn(model, tokenizer)  # what load_base_model does: TRL's GRPO generation reads it
    assert model.generation_config.eos_token_id == [tokenizer.eos_token_id, end_id]

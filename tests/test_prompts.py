"""The one prompt builder: prefix for seq2seq, chat template for instruct models, instruction otherwise."""

from __future__ import annotations

import pytest

from detoxrl.models.loading import load_tokenizer
from detoxrl.prompts import INSTRUCTION_TEMPLATE, PromptConfig, PromptFormatter, build_prompt, build_target


def test_seq2seq_gets_task_prefix(tiny_dir):
    tok = load_tokenizer(tiny_dir("t5"))
    assert build_prompt("you idiot", PromptConfig(), tok, "seq2seq") == "detoxify: you idiot"
    assert build_prompt("x", PromptConfig(task_prefix="paraphrase: "), tok, "seq2seq") == "paraphrase: x"
    assert build_target("fine", tok, "seq2seq") == "fine"


def test_instruct_model_gets_chat_template_with_system(tiny_dir):
    tok = load_tokenizer(tiny_dir("llama"))
    fmt = PromptFormatter(PromptConfig(system_prompt="Be polite."), tok, "causal")
    assert fmt.format == "chat"
    assert fmt.prompt("you idiot") == (
        "<|im_start|>system\nBe polite.<|im_end|>\n<|im_start|>user\nyou idiot<|im_end|>\n<|im_start|>assistant\n"
    )
    assert fmt.target("you are wrong") == "you are wrong<|im_end|>"


def test_base_model_gets_instruction_template(tiny_dir):
    tok = load_tokenizer(tiny_dir("gpt2"))
    fmt = PromptFormatter(PromptConfig(instruction="Rewrite."), tok, "causal")
    assert fmt.format == "instruction"
    assert fmt.prompt("you idiot") == "### Instruction:\nRewrite.\n\n### Input:\nyou idiot\n\n### Response:\n"
    assert INSTRUCTION_TEMPLATE.count("{text}") == 1


def test_chat_format_needs_a_template(tiny_dir):
    tok = load_tokenizer(tiny_dir("gpt2"))
    with pytest.raises(ValueError, match="prompt_format: chat needs a tokenizer with a chat template"):
        build_prompt("x", PromptConfig(prompt_format="chat"), tok, "causal")


def test_encode_prompts_left_pads_causal(tiny_dir):
    tok = load_tokenizer(tiny_dir("llama"))
    batch = PromptFormatter(PromptConfig(), tok, "causal").encode_prompts(["a", "a much longer input sentence"])
    assert batch["attention_mask"][0, 0] == 0 and batch["attention_mask"][0, -1] == 1

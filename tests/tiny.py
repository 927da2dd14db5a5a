"""Tiny random-init models of every supported architecture, built from configs (no downloads).

Widths are 64, the smallest bitsandbytes' CPU 4-bit kernel takes (it packs blocks of 64 inputs).

``build_tiny(kind, folder)`` writes a loadable model folder (safetensors + tokenizer) for
kind in ``TINY_KINDS``. All share one byte-level BPE tokenizer trained here on a few sentences;
the causal Llama one carries a ChatML chat template so the ``chat`` prompt format is exercised,
GPT-2 has none so ``instruction`` is.
"""

from __future__ import annotations

import os

CORPUS = [
    "you are a stupid idiot and nobody likes you",
    "you are not very kind and people may not like you",
    "this is some bullshit , shut the fuck up",
    "this is not true , please stop talking",
    "what a great day to go outside with friends",
    "the class starts at nine in the morning",
    "detoxify: rewrite the text politely",
    "### Instruction: Rewrite the following text ### Input: ### Response:",
]
SPECIALS = ["<pad>", "</s>", "<unk>", "<s>", "<|im_start|>", "<|im_end|>"]
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TINY_KINDS = ("t5", "mt5", "bart", "llama", "gpt2", "qwen2")
SEQ2SEQ_KINDS = ("t5", "mt5", "bart")


def build_tokenizer(seq2seq: bool):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS * 4, trainer=trainer)
    if seq2seq:  # T5/BART tokenizers append EOS to every encoded text
        tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", eos_token="</s>" if seq2seq else "<|im_end|>",
        unk_token="<unk>", bos_token="<s>",
    )
    if not seq2seq:
        fast.chat_template = CHATML
    return fast


def tiny_config(kind: str, vocab_size: int, eos_id: int):
    import transformers as tf

    common = dict(vocab_size=vocab_size, pad_token_id=0, eos_token_id=eos_id, bos_token_id=3)
    if kind in ("t5", "mt5"):
        cls = tf.T5Config if kind == "t5" else tf.MT5Config
        return cls(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4,
                   decoder_start_token_id=0, **common)
    if kind == "bart":
        return tf.BartConfig(d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                             decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128,
                             max_position_embeddings=128, decoder_start_token_id=eos_id,
                             forced_eos_token_id=eos_id, **common)
    if kind == "llama":
        return tf.LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                              num_key_value_heads=2, max_position_embeddings=256, **common)
    if kind == "qwen2":
        return tf.Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                              num_key_value_heads=2, max_position_embeddings=256, **common)
    if kind == "gpt2":
        return tf.GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=256, **common)
    raise ValueError(f"unknown tiny kind {kind}")


def build_tiny(kind: str, folder: str, seed: int = 0) -> str:
    """Write a tiny random-init ``kind`` model plus tokenizer to ``folder``; return the folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

    seq2seq = kind in SEQ2SEQ_KINDS
    tokenizer = build_tokenizer(seq2seq)
    if kind == "gpt2":
        tokenizer.chat_template = None
    config = tiny_config(kind, len(tokenizer), tokenizer.eos_token_id)
    torch.manual_seed(seed)
    auto = AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM
    model = auto.from_config(config)
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder

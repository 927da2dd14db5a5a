"""Helpers for the ablation and pipeline tests: tiny offline judges for detox-eval, YAML writing, mtimes."""

from __future__ import annotations

import os

import yaml


def build_tiny_sentence_encoder(folder: str) -> str:
    """A tiny random-init BERT + mean pooling saved as a sentence-transformers folder (no download)."""
    from sentence_transformers import SentenceTransformer, models
    from transformers import BertConfig, BertModel

    from tests.tiny import build_tokenizer

    tok = build_tokenizer(seq2seq=False)
    bert_dir = os.path.join(folder, "_bert")
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128, pad_token_id=tok.pad_token_id)
    BertModel(cfg).save_pretrained(bert_dir, safe_serialization=True)
    tok.save_pretrained(bert_dir)
    word = models.Transformer(bert_dir, max_seq_length=64)
    dim = getattr(word, "get_embedding_dimension", None) or word.get_word_embedding_dimension
    pool = models.Pooling(dim(), pooling_mode="mean")
    SentenceTransformer(modules=[word, pool], device="cpu").save(folder)
    return folder


def tiny_eval_overrides(lexicon_dir, encoder: str, lm: str) -> dict:
    """detox-eval fields that make it cheap and offline: lexicon STA, a tiny encoder for SIM, a tiny LM for FL."""
    return {"lexicon_dir": str(lexicon_dir), "lexicons": ["ldnoobw"], "judge_toxicity_backend": "lexicon",
            "judge_similarity_model": encoder, "judge_fluency_model": lm, "judge_device": "cpu",
            "eval_device": "cpu", "max_new_tokens": 4, "gen_batch_size": 4, "num_threads": 1}


def write_yaml(path, payload: dict) -> str:
    path = str(path)
    with open(path, "w", encoding="utf-8") as fh:
        yaml.safe_dump(payload, fh, sort_keys=False)
    return path


def mtimes(folder) -> dict[str, int]:
    """``relative path -> mtime_ns`` of every file under ``folder`` (logs and status files excluded)."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            if name.endswith(".log") or name == "status.json":
                continue
            p = os.path.join(root, name)
            out[os.path.relpath(p, folder)] = os.stat(p).st_mtime_ns
    return out

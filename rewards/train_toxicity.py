"""``detox-train-toxicity``: train the embedded toxicity classifier (the default ``hf`` toxicity judge).

    detox-train-toxicity                                   # defaults: configs/rewards/train_toxicity.yaml
    detox-train-toxicity --config configs/rewards/train_toxicity.yaml --output_dir runs/tox

What it does, exactly:

1. Data (``rewards/labelled.py``): ParaDetox toxic vs neutral sides (held out: the core's dev split,
   grouped by source), the Jigsaw binary subset, Davidson (hate/offensive vs neither) and Civil
   Comments sentences (held out: a random ``heldout_fraction`` of each). Each source's train part
   is capped at ``<source>_max_train`` texts and its held-out part at ``heldout_max_per_source``,
   half per label where the data allow.
2. Model: the packaged all-MiniLM-L6-v2 encoder (``resolve_model``) as
   ``AutoModelForSequenceClassification`` with ``num_labels=2``, ``id2label {0: neutral, 1: toxic}``
   (a new linear head on BERT's pooled [CLS]). The encoder is uncased, so ParaDetox's lowercase
   toxic side vs cased neutral side is no shortcut.
3. Training: cross-entropy, AdamW (``learning_rate``, ``weight_decay``), linear warm-up for
   ``warmup_ratio`` of the steps then linear decay, ``num_train_epochs`` over the shuffled data in
   batches of ``batch_size``; texts truncated to ``max_length`` tokens; batches are built from
   length-sorted chunks (less padding, same examples).
4. Held-out report: ROC-AUC and accuracy (``P(toxic) >= 0.5``) per source and pooled, plus the same
   ROC-AUC for the lexicon judge as a reference point. Written to ``metrics.json``.
5. Output: a normal HF classifier folder (``model.safetensors``, ``config.json``, tokenizer,
   ``metrics.json``, ``train_toxicity_config.yaml``), written atomically to ``output_dir``
   (default: ``<detoxrl cache>/models/detoxrl-toxicity-minilm``, what ``toxicity_model:
   detoxrl-toxicity-minilm`` loads).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field

import torch

from detoxrl.config import DetoxParser, prog_name, resolved_config_dict, run_cli
from detoxrl.data import DataConfig
from detoxrl.errors import UserError
from detoxrl.io import atomic_directory
from detoxrl.log import setup_logging
from detoxrl.models.embedded import MINILM_ID
from rewards import labelled
from rewards.batching import set_torch_threads
from rewards.classifier import SequenceClassifier
from rewards.labelled import Labelled
from detoxrl.metrics import accuracy, roc_auc

log = logging.getLogger("detoxrl.rewards")
ID2LABEL = {0: "neutral", 1: "toxic"}


@dataclass
class TrainToxicityConfig:
    """Options of ``detox-train-toxicity`` (ParaDetox itself and its dev split come from ``DataConfig``)."""

    output_dir: str | None = field(
        default=None, metadata={"help": "Where to save the classifier folder (default: the detoxrl cache, "
                                "<cache>/models/detoxrl-toxicity-minilm, which the default toxicity judge loads)."})
    base_model: str = field(default=MINILM_ID, metadata={"help": "Encoder to fine-tune (hub id, alias or folder)."})
    jigsaw_file: str = field(
        default="../shared/data/jigsaw_toxic_binary_robtest/jigsaw_test_binary.no_test.csv",
        metadata={"help": "Jigsaw binary subset CSV (text,label; no header). Empty string: skip this source."})
    davidson_file: str = field(
        default="../shared/data/davidson_hate_offensive/labeled_data.csv",
        metadata={"help": "Davidson labeled_data.csv. Empty string: skip this source."})
    civil_comments_dir: str = field(
        default="../shared/data/civil_comments_sentences_detox2021",
        metadata={"help": "Folder of Civil Comments sentence files (*_toxic*.txt, *_normal*.txt). Empty: skip."})
    use_paradetox: bool = field(default=True, metadata={"help": "Train on ParaDetox (dataset field) too."})
    paradetox_max_train: int = field(default=6000, metadata={"help": "ParaDetox training texts (half toxic)."})
    jigsaw_max_train: int = field(default=3000, metadata={"help": "Jigsaw training texts (half toxic)."})
    davidson_max_train: int = field(default=3000, metadata={"help": "Davidson training texts (half toxic)."})
    civil_max_train: int = field(default=5000, metadata={"help": "Civil Comments training texts (half toxic)."})
    heldout_fraction: float = field(
        default=0.1, metadata={"help": "Share of each non-ParaDetox source held out (never trained on)."})
    heldout_max_per_source: int = field(
        default=1000, metadata={"help": "Held-out texts scored per source (half toxic where possible)."})
    max_length: int = field(default=64, metadata={"help": "Truncate texts to this many tokens."})
    batch_size: int = field(default=32, metadata={"help": "Training batch size."})
    eval_batch_size: int = field(default=128, metadata={"help": "Held-out scoring batch size."})
    learning_rate: float = field(default=5e-5, metadata={"help": "AdamW peak learning rate."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (not on biases/LayerNorm)."})
    warmup_ratio: float = field(default=0.06, metadata={"help": "Share of steps with linear warm-up."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Passes over the training texts (may be < 1)."})
    num_threads: int = field(
        default=0, metadata={"help": "torch CPU threads; 0: the cores not busy at start (cpu count minus load "
                             "average, at least 1), since oversubscribed threads on a shared CPU run far slower."})
    logging_steps: int = field(default=50, metadata={"help": "Log the loss every this many steps."})
    seed: int = field(default=0, metadata={"help": "Seed of the held-out split of the non-ParaDetox sources, the "
                                           "sampling, the batch order and the head's initialisation."})

    def __post_init__(self):
        for name in ("paradetox_max_train", "jigsaw_max_train", "davidson_max_train", "civil_max_train",
                     "heldout_max_per_source", "num_threads"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (got {getattr(self, name)})")
        for name in ("max_length", "batch_size", "eval_batch_size", "logging_steps"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0 (got {getattr(self, name)})")
        if not 0.0 < self.heldout_fraction < 1.0:
            raise ValueError(f"heldout_fraction must be in (0, 1) (got {self.heldout_fraction})")
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ValueError(f"warmup_ratio must be in [0, 1) (got {self.warmup_ratio})")
        if self.learning_rate <= 0 or self.num_train_epochs <= 0:
            raise ValueError("learning_rate and num_train_epochs must be > 0")


# ----------------------------------------------------------------------------------- data


def collect_data(cfg: TrainToxicityConfig, data_cfg: DataConfig) -> tuple[list[Labelled], list[Labelled]]:
    """(train, held-out) over every enabled source, capped and balanced as configured."""
    seed = cfg.seed
    splits: dict[str, tuple[list[Labelled], list[Labelled]]] = {}
    if cfg.use_paradetox and cfg.paradetox_max_train:
        splits["paradetox"] = labelled.paradetox_split(data_cfg)
    readers = (("jigsaw", cfg.jigsaw_file, labelled.read_jigsaw, cfg.jigsaw_max_train),
               ("davidson", cfg.davidson_file, labelled.read_davidson, cfg.davidson_max_train),
               ("civil", cfg.civil_comments_dir, labelled.read_civil, cfg.civil_max_train))
    for name, path, read, cap in readers:
        if path and cap:
            splits[name] = labelled.random_split(read(path), cfg.heldout_fraction, seed)
    if not splits:
        raise UserError(f"{prog_name('detox-train-toxicity')}: every data source is disabled; enable at least one")
    caps = {"paradetox": cfg.paradetox_max_train, "jigsaw": cfg.jigsaw_max_train,
            "davidson": cfg.davidson_max_train, "civil": cfg.civil_max_train}
    train, heldout = [], []
    for name, (tr, ho) in splits.items():
        tr = labelled.balanced_sample(tr, caps[name], seed)
        ho = labelled.balanced_sample(ho, cfg.heldout_max_per_source, seed)
        log.info("%-9s train %5d (%d toxic)  held-out %4d (%d toxic)", name, len(tr), sum(i.label for i in tr),
                 len(ho), sum(i.label for i in ho))
        train += tr
        heldout += ho
    random.Random(seed).shuffle(train)
    return train, heldout


def length_batches(lengths: list[int], batch_size: int, seed: int, chunk: int = 50) -> list[list[int]]:
    """Shuffled index batches; each chunk of ``chunk`` batches is sorted by length first (less padding)."""
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    batches = []
    span = batch_size * chunk
    for start in range(0, len(order), span):
        block = sorted(order[start : start + span], key=lambda i: lengths[i])
        batches += [block[i : i + batch_size] for i in range(0, len(block), batch_size)]
    rng.shuffle(batches)
    return batches


# ----------------------------------------------------------------------------------- training


def encode_labelled(tokenizer, items: list[Labelled], max_length: int) -> list[dict[str, list[int]]]:
    """Token ids (and segment ids) per item: ``text`` alone, or ``(text, text_pair)`` as a pair when set."""
    texts, pairs = [i.text for i in items], [i.text_pair for i in items]
    if any(p is not None for p in pairs):
        if any(p is None for p in pairs):
            raise ValueError("either every item has a text_pair or none has")
        enc = tokenizer(texts, pairs, truncation=True, max_length=max_length)
    else:
        enc = tokenizer(texts, truncation=True, max_length=max_length)
    keys = [k for k in ("input_ids", "token_type_ids") if k in enc]
    return [{k: enc[k][j] for k in keys} for j in range(len(items))]


def _pad(tokenizer, encoded: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
    return tokenizer.pad(encoded, return_tensors="pt")


def train_classifier(model, tokenizer, train: list[Labelled], cfg: TrainToxicityConfig, seed: int):
    """Fine-tune ``model`` in place (see the module docstring, step 3).

    ``cfg`` needs ``max_length``, ``batch_size``, ``learning_rate``, ``weight_decay``, ``warmup_ratio``,
    ``num_train_epochs`` and ``logging_steps``; the feedback reward model (``rewards/feedback_model.py``)
    passes its own. Items with a ``text_pair`` are encoded as text pairs.
    """
    encoded = encode_labelled(tokenizer, train, cfg.max_length)
    labels = torch.tensor([i.label for i in train])
    epochs_full = math.ceil(cfg.num_train_epochs)
    batches = []
    for epoch in range(epochs_full):
        batches += length_batches([len(e["input_ids"]) for e in encoded], cfg.batch_size, seed + epoch)
    total = max(1, int(round(len(train) / cfg.batch_size * cfg.num_train_epochs)))
    batches = batches[:total]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=cfg.learning_rate)
    warmup = int(cfg.warmup_ratio * total)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: (s + 1) / max(1, warmup) if s < warmup else max(0.0, (total - s) / max(1, total - warmup)))
    model.train()
    start, running = time.time(), 0.0
    log.info("training %d steps of %d texts (max_length %d)", len(batches), cfg.batch_size, cfg.max_length)
    from tqdm.auto import tqdm

    for step, idx in enumerate(tqdm(batches, desc="toxicity classifier", unit="step", mininterval=5), 1):
        batch = _pad(tokenizer, [encoded[i] for i in idx])
        loss = model(**batch, labels=labels[idx]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        running += loss.item()
        if step % cfg.logging_steps == 0 or step == len(batches):
            elapsed = time.time() - start
            log.info("step %d/%d loss %.4f  %.0fs elapsed, ~%.0fs left", step, len(batches),
                     running / ((step - 1) % cfg.logging_steps + 1), elapsed, elapsed / step * (len(batches) - step))
            running = 0.0
    model.eval()
    return time.time() - start


def predict(model, tokenizer, texts: list[str], batch_size: int, max_length: int) -> list[float]:
    """``P(toxic)`` for each text, in order (the ``hf`` judge's own batched scorer)."""
    scorer = SequenceClassifier(model, tokenizer, 1, activation="softmax", device=torch.device("cpu"),
                                batch_size=batch_size, max_length=max_length)
    return scorer(texts).tolist()


def heldout_metrics(heldout: list[Labelled], scores: list[float], lexicon_scores: list[float] | None = None) -> dict:
    """ROC-AUC and accuracy per source and pooled (``overall``); the lexicon's ROC-AUC beside them."""
    groups: dict[str, list[int]] = defaultdict(list)
    for k, item in enumerate(heldout):
        groups[item.source].append(k)
    groups["overall"] = list(range(len(heldout)))
    out = {}
    for name, ks in groups.items():
        y = [heldout[k].label for k in ks]
        s = [scores[k] for k in ks]
        row = {"n": len(ks), "toxic": sum(y), "roc_auc": roc_auc(y, s), "accuracy": accuracy(y, s)}
        if lexicon_scores is not None:
            row["lexicon_roc_auc"] = roc_auc(y, [lexicon_scores[k] for k in ks])
        out[name] = row
    return out


def _lexicon_scores(texts: list[str]) -> list[float] | None:
    try:
        from detoxrl.vocab import VocabConfig, load_lexicon
        from rewards.toxicity.lexicon import toxic_word_share

        lexicon = load_lexicon(VocabConfig())
    except UserError as exc:
        log.info("lexicon reference skipped: %s", exc)
        return None
    return [toxic_word_share(lexicon, t) for t in texts]


def format_metrics(metrics: dict) -> str:
    lines = ["| held-out | n | toxic | ROC-AUC | accuracy | lexicon ROC-AUC |", "|---|---:|---:|---:|---:|---:|"]
    for name, m in metrics.items():
        lex = f"{m['lexicon_roc_auc']:.4f}" if "lexicon_roc_auc" in m else "-"
        lines.append(f"| {name} | {m['n']} | {m['toxic']} | {m['roc_auc']:.4f} | {m['accuracy']:.4f} | {lex} |")
    return "\n".join(lines)


def run(cfg: TrainToxicityConfig, data_cfg: DataConfig) -> dict:
    """Train, score the held-out split, save the folder; returns the metrics dict written to metrics.json."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from detoxrl.models.refs import resolve_model
    from rewards.toxicity.config import default_classifier_dir

    t0 = time.time()
    threads = set_torch_threads(cfg.num_threads)
    log.info("using %d torch threads", threads)
    torch.manual_seed(cfg.seed)
    output_dir = cfg.output_dir or default_classifier_dir()
    train, heldout = collect_data(cfg, data_cfg)
    src = resolve_model(cfg.base_model, what="toxicity base encoder")
    tokenizer = AutoTokenizer.from_pretrained(src.path)
    model = AutoModelForSequenceClassification.from_pretrained(
        src.path, num_labels=2, id2label=ID2LABEL, label2id={v: k for k, v in ID2LABEL.items()})
    train_seconds = train_classifier(model, tokenizer, train, cfg, cfg.seed)
    scores = predict(model, tokenizer, [i.text for i in heldout], cfg.eval_batch_size, cfg.max_length)
    metrics = {
        "heldout": heldout_metrics(heldout, scores, _lexicon_scores([i.text for i in heldout])),
        "train_texts": len(train),
        "train_per_source": {s: sum(1 for i in train if i.source == s) for s in labelled.SOURCES},
        "train_seconds": round(train_seconds, 1),
        "base_model": f"{src.ref} ({src.source})",
        "max_length": cfg.max_length,
        "torch_threads": threads,
    }
    metrics["total_seconds"] = round(time.time() - t0, 1)
    with atomic_directory(output_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        with open(os.path.join(tmp, "metrics.json"), "w", encoding="utf-8") as fh:
            json.dump(metrics, fh, indent=2)
        import yaml

        with open(os.path.join(tmp, "train_toxicity_config.yaml"), "w", encoding="utf-8") as fh:
            yaml.safe_dump(resolved_config_dict(cfg, data_cfg), fh, sort_keys=False)
    print(format_metrics(metrics["heldout"]))
    print(f"saved the toxicity classifier to {output_dir} ({metrics['total_seconds']:.0f}s in all, "
          f"{train_seconds:.0f}s training)")
    return metrics


def _main(args: list[str] | None) -> None:
    setup_logging()
    cfg, data_cfg = DetoxParser([TrainToxicityConfig, DataConfig], prog="detox-train-toxicity").parse(args)
    run(cfg, data_cfg)


def main(args: list[str] | None = None) -> int:
    """Entry point of ``detox-train-toxicity``; returns the exit code."""
    return run_cli(_main, args)


if __name__ == "__main__":
    sys.exit(main())

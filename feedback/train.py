"""``detox-feedback train``: turn the feedback store into the next model version.

    detox-feedback train --config configs/feedback/default.yaml
    detox-feedback train --config configs/feedback/default.yaml --verdicts reward_model --sft_max_steps 100

Reads top to bottom: records (``FeedbackStore``) -> SFT pairs and verdicts -> the current model
(``model``: a run folder) -> up to three steps -> the new version's card and the store's log.

1. **Corrections and accepted rewrites -> SFT pairs** (``sft: true``). A correction gives
   ``(input, correction)``, an accepted record without one ``(input, output)``; duplicates are
   dropped. They are written, repeated ``feedback_repeat`` times, into an instruction JSONL file
   (``<output_dir>/feedback_data/sft.jsonl``) together with the supervised stage's own data
   (``sft_config``'s ``DataConfig``): in ``data_mode: add``, ``replay_pairs`` of its train pairs
   (seeded sample; 0 = all); in ``replace``, none. Every record is pinned to its split (the
   ``split`` field), and the supervised dev split is kept as dev, minus any source a feedback pair
   trains on. Then the supervised stage itself runs on that file (``sft.train.run`` with
   ``--config sft_config --dataset <file>``), continuing from the current model's merged weights
   with a new adapter, ``sft_loss`` (default ``ce``: a correction is a whole target, while the
   toxic-mask loss would train only the tokens around toxic spans), ``sft_max_steps``,
   ``sft_learning_rate``, ``sft_batch_size`` and any ``sft_overrides`` (``name=value``).
2. **Verdicts -> KTO** (``verdicts: kto``, or ``auto`` for causal models): TRL's ``KTOTrainer``
   (unpaired good/bad feedback) on ``(prompt, completion, label)``: accepted outputs and
   corrections are desirable, rejected outputs undesirable. The prompt is the model's own format
   (``detoxrl.prompts``); a fresh LoRA adapter trains on the model from step 1 (or the current
   model), the reference is the same model with the adapter off. The undesirable weight is set so
   that ``desirable_weight * n_desirable / (undesirable_weight * n_undesirable) = 1`` (the KTO
   paper's recommended range is [1, 4/3]). Causal models only: a seq2seq model with
   ``verdicts: kto`` is an error that points to ``reward_model``.
3. **Verdicts -> a feedback reward model** (``verdicts: reward_model``, or ``auto`` for seq2seq):
   ``rewards.feedback_model.train_feedback_model`` on ``(input, output, accepted)`` (plus
   ``(input, correction, 1)``), saved to ``<output_dir>/feedback_reward``. PPO uses it as the
   composite reward's fourth component: ``--w_feedback 1 --feedback_model <that folder>``.

``verdicts: auto`` skips the verdict step (with a log line) when there are fewer than
``min_verdicts`` accepted or rejected examples.

Output: ``output_dir`` holds the new model version in the layout of an SFT run (``merged/``,
``adapter/``, ``detoxrl.json``, ``README.md``), plus ``feedback_data/``, ``feedback_config.yaml``
and, when steps 1 and 2 both run, ``stages/sft/`` (the intermediate model, the base of the final
adapter). ``detoxrl.json`` gets ``version`` (``feedback.versions.new_version``), ``parent_version``,
``stage: feedback`` and a ``feedback`` summary; the store's ``trainings`` table records the new
version, its parent and the ids of the records it was trained on. Every record carries the version
it was collected on, so ``collected_on`` can restrict a run to some versions.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Literal

from detoxrl.config import assignments, save_resolved_config
from detoxrl.data import Pair, load_detox_data, subsample, write_instruction_json
from detoxrl.errors import UserError
from detoxrl.io import atomic_write_text
from detoxrl.paths import resolve_path
from detoxrl.prompts import PromptConfig
from feedback.preference import preference_pairs
from feedback.store import FeedbackRecord, FeedbackStore
from detoxrl.hub_push import check_push, push_run
from detoxrl.runcard import find_card, has_card, read_card
from feedback.versions import model_version, stamp_card

log = logging.getLogger("detoxrl.feedback")


@dataclass
class FeedbackTrainConfig:
    """Options of ``detox-feedback train`` (see the module docstring for what each step does)."""

    store: str = field(default="outputs/feedback/feedback.db", metadata={"help": "The feedback store (SQLite file)."})
    model: str = field(
        default="outputs/sft/default",
        metadata={"help": "The current model: a run folder (detox-sft or detox-feedback output, with detoxrl.json), "
                  "its merged/ folder, or a plain model folder. Training continues from it."})
    output_dir: str = field(default="outputs/feedback/default", metadata={"help": "Where the new model version goes."})
    push_to_hub: bool = field(default=False, metadata={"help": "Upload the new model version to the Hugging Face Hub "
                                                             "(see detoxrl/hub_push.py for what is uploaded)."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Repo id (NAME or OWNER/NAME); default: the "
                                                                     "output folder's name."})
    hub_private_repo: bool | None = field(default=None, metadata={"help": "Create the repo private."})
    overwrite: bool = field(default=False, metadata={"help": "Replace a model already in output_dir."})
    sft_config: str = field(
        default="configs/sft/default.yaml",
        metadata={"help": "The supervised stage's config: its data (mixed in with data_mode: add; its dev split "
                  "evaluates), toxic vocabulary and LoRA settings."})
    collected_on: list[str] = field(
        default_factory=list, metadata={"help": "Only records collected on these model versions (empty: all)."})
    # step 1: SFT on corrections and accepted rewrites
    sft: bool = field(default=True, metadata={"help": "Train on corrections and accepted rewrites (SFT pairs)."})
    data_mode: Literal["add", "replace"] = field(
        default="add", metadata={"help": "add: feedback pairs join replay_pairs of the supervised data; replace: "
                                 "feedback pairs only."})
    replay_pairs: int = field(
        default=100, metadata={"help": "add: supervised train pairs mixed in (a seeded sample; 0: all of them)."})
    feedback_repeat: int = field(default=8, metadata={"help": "Copies of each feedback pair in the training data."})
    sft_loss: Literal["ce", "toxic_penalty", "toxic_mask"] = field(
        default="ce", metadata={"help": "Loss of the SFT step (ce: the whole correction is the target)."})
    sft_max_steps: int = field(default=60, metadata={"help": "SFT optimizer steps."})
    sft_learning_rate: float = field(default=5e-4, metadata={"help": "SFT peak learning rate."})
    sft_batch_size: int = field(default=8, metadata={"help": "SFT pairs per step."})
    sft_overrides: list[str] = field(
        default_factory=lambda: ["guard_samples=32"],
        metadata={"help": "More supervised-stage fields as name=value, e.g. guard_samples=16 lora_r=8 (see "
                  "sft/train.py --help)."})
    # steps 2 and 3: verdicts
    verdicts: Literal["auto", "kto", "dpo", "orpo", "reward_model", "pairwise_reward", "none"] = field(
        default="auto", metadata={"help": "auto: KTO for causal models, the feedback reward model for seq2seq; "
                                  "kto; dpo (causal) or orpo (causal and seq2seq) on the preference pairs "
                                  "(feedback/preference.py); reward_model (pointwise, on verdicts); pairwise_reward "
                                  "(Bradley-Terry on the preference pairs, TRL's RewardTrainer); none."})
    min_verdicts: int = field(
        default=4, metadata={"help": "auto: skip the verdict step with fewer accepted or rejected examples than this."})
    kto_max_steps: int = field(default=30, metadata={"help": "KTO optimizer steps."})
    kto_learning_rate: float = field(default=5e-5, metadata={"help": "KTO learning rate (LoRA)."})
    kto_beta: float = field(default=0.1, metadata={"help": "KTO beta (higher: stay closer to the reference)."})
    kto_batch_size: int = field(default=8, metadata={"help": "KTO examples per step (>= 2: KTO's KL estimate)."})
    kto_max_length: int = field(default=256, metadata={"help": "KTO prompt + completion tokens kept."})
    kto_lora_r: int = field(default=16, metadata={"help": "Rank of the LoRA adapter of KTO, DPO and ORPO."})
    kto_lora_alpha: int = field(default=32, metadata={"help": "Alpha of the LoRA adapter of KTO, DPO and ORPO."})
    kto_lora_target_modules: list[str] = field(
        default_factory=lambda: ["all-linear"],
        metadata={"help": "LoRA targets of KTO, DPO and ORPO (qv | qkvo | all-linear | names)."})
    pref_max_steps: int = field(default=30, metadata={"help": "DPO / ORPO optimizer steps."})
    pref_learning_rate: float = field(default=5e-5, metadata={"help": "DPO / ORPO learning rate (LoRA)."})
    pref_beta: float = field(default=0.1, metadata={"help": "DPO beta (higher: closer to the reference); ORPO's "
                                                            "weight of the odds-ratio term."})
    pref_batch_size: int = field(default=4, metadata={"help": "DPO / ORPO preference pairs per step."})
    pref_max_length: int = field(default=256, metadata={"help": "DPO / ORPO prompt + completion tokens kept."})
    rm_base_model: str = field(default="sentence-transformers/all-MiniLM-L6-v2",
                               metadata={"help": "Encoder of the feedback reward model."})
    rm_epochs: float = field(default=4.0, metadata={"help": "Feedback reward model: passes over the examples."})
    rm_learning_rate: float = field(default=5e-5, metadata={"help": "Feedback reward model: AdamW learning rate."})
    rm_batch_size: int = field(default=16, metadata={"help": "Feedback reward model: examples per step."})
    rm_max_length: int = field(default=128, metadata={"help": "Feedback reward model: tokens per (input, output)."})
    seed: int = field(default=42, metadata={"help": "Seed of the replay sample and of every training step."})
    num_threads: int = field(
        default=0, metadata={"help": "torch CPU threads; 0: the cores not busy at start (see rewards/batching.py)."})

    def __post_init__(self):
        for name in ("replay_pairs", "sft_max_steps", "kto_max_steps", "pref_max_steps", "min_verdicts", "num_threads"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0 (got {getattr(self, name)})")
        for name in ("feedback_repeat", "sft_batch_size", "rm_batch_size", "rm_max_length", "kto_max_length",
                     "pref_batch_size", "pref_max_length"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 (got {getattr(self, name)})")
        if self.kto_batch_size < 2:
            raise ValueError(f"kto_batch_size must be >= 2: KTO estimates its KL term within a batch "
                             f"(got {self.kto_batch_size})")
        for name in ("kto_beta", "pref_beta", "pref_learning_rate"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 (got {getattr(self, name)})")
        for item in self.sft_overrides:
            if "=" not in item or not item.split("=", 1)[0].strip():
                raise ValueError(f"sft_overrides: '{item}' is not name=value (e.g. guard_samples=16)")
        if isinstance(self.collected_on, str):
            self.collected_on = [self.collected_on]


# ----------------------------------------------------------------------------------- data


@dataclass
class FeedbackData:
    """What the store's records become: SFT pairs and KTO/reward-model verdict examples."""

    pairs: list[Pair]  # (input, correction) and (input, accepted output), deduplicated
    verdicts: list[tuple[str, str, int]]  # (input, output, 1 accepted / 0 rejected), deduplicated
    record_ids: list[int]
    corrections: int = 0
    accepted: int = 0
    rejected: int = 0

    def counts(self) -> dict[str, int]:
        return {"records": len(self.record_ids), "accepted": self.accepted, "rejected": self.rejected,
                "corrections": self.corrections, "sft_pairs": len(self.pairs),
                "desirable": sum(y for *_, y in self.verdicts),
                "undesirable": sum(1 - y for *_, y in self.verdicts)}


def feedback_data(records: list[FeedbackRecord]) -> FeedbackData:
    """SFT pairs and verdicts from records (see the module docstring, steps 1-3).

    The first verdict on an (input, text) wins: a later record that contradicts it is not used twice.
    """
    pairs: dict[tuple[str, str], Pair] = {}
    verdicts: dict[tuple[str, str], int] = {}
    out = FeedbackData([], [], [r.id for r in records])
    for r in records:
        out.accepted += r.verdict == "accept"
        out.rejected += r.verdict == "reject"
        out.corrections += r.correction is not None
        target = r.correction or (r.output if r.verdict == "accept" else None)
        if target is not None:
            pairs.setdefault((r.input, target), Pair(r.input, target, origin=f"feedback record {r.id}"))
            verdicts.setdefault((r.input, target), 1)
        if r.verdict == "reject":  # the model's own output was not good as it is (corrected or not)
            verdicts.setdefault((r.input, r.output), 0)
    out.pairs = list(pairs.values())
    out.verdicts = [(i, o, y) for (i, o), y in verdicts.items()]
    return out


def _sft_config_path(sft_config: str) -> str:
    """``sft_config`` as given, or found under the project root (so the command works from any folder)."""
    return resolve_path(sft_config) or sft_config


def _sft_parse(sft_config: str, values: dict):
    """The supervised stage's configs: ``sft_config`` with ``values`` on top."""
    from sft.train import parser

    return parser().parse_mapping(values, _sft_config_path(sft_config))


def write_sft_data(cfg: FeedbackTrainConfig, data: FeedbackData, path: str) -> dict:
    """The SFT step's instruction JSONL (pinned splits); returns its counts."""
    data_cfg = _sft_parse(cfg.sft_config, assignments(cfg.sft_overrides))[0]
    supervised = load_detox_data(data_cfg)
    replay: list[Pair] = []
    if cfg.data_mode == "add":
        replay = subsample(supervised.train, cfg.replay_pairs or None, cfg.seed)
    trained_groups = {p.group for p in data.pairs}
    dev = [p for p in supervised.dev if p.group not in trained_groups]
    rows = ([replace(p, split="train") for p in replay]
            + [replace(p, split="train") for _ in range(cfg.feedback_repeat) for p in data.pairs]
            + [replace(p, split="dev") for p in dev])
    random.Random(cfg.seed).shuffle(rows)
    write_instruction_json(rows, path)
    counts = {"replay_pairs": len(replay), "feedback_pairs": len(data.pairs), "feedback_repeat": cfg.feedback_repeat,
              "train_rows": len(replay) + cfg.feedback_repeat * len(data.pairs), "dev_pairs": len(dev),
              "dev_dropped_as_trained": len(supervised.dev) - len(dev), "supervised_data": supervised.source}
    log.info("SFT data %s: %d replay + %d feedback pairs x%d; %d dev pairs (%d dev pairs dropped: their source is "
             "trained on)", path, len(replay), len(data.pairs), cfg.feedback_repeat, len(dev),
             counts["dev_dropped_as_trained"])
    if not dev:
        raise UserError(f"sft_config '{cfg.sft_config}': its data has no dev pairs left to evaluate on; use data with "
                        "a dev split (dev_size)")
    return counts


# ----------------------------------------------------------------------------------- the current model


@dataclass
class CurrentModel:
    ref: str
    weights: str  # a loadable full model folder or hub id
    card: dict
    family: str
    version: str

    def prompt_config(self) -> PromptConfig:
        names = {f.name for f in fields(PromptConfig)}
        return PromptConfig(**{k: v for k, v in (self.card.get("prompt") or {}).items() if k in names})


def current_model(ref: str) -> CurrentModel:
    """Where the weights of ``ref`` are, its card and family (``UserError`` when it is no model)."""
    path = resolve_path(ref) or ref
    found = find_card(path) if os.path.isdir(path) else None
    card = read_card(found) if found else {}
    weights = path
    if found and os.path.dirname(found) == os.path.abspath(path):  # a run folder
        for sub in ("merged", "adapter"):
            if os.path.isfile(os.path.join(path, sub, "config.json")):
                weights = os.path.join(path, sub)
                break
        else:
            raise UserError(f"model '{ref}' is a run folder without merged/ (or a full adapter/) model; train it with "
                            "merge_adapter: true, or pass a full model folder")
    elif os.path.isdir(path) and not os.path.isfile(os.path.join(path, "config.json")):
        raise UserError(f"model '{ref}' is not a model folder (no config.json or detoxrl.json); pass the run folder "
                        "detox-sft or detox-feedback wrote")
    elif not os.path.exists(path) and (ref.startswith((".", "/", "~")) or ref.count("/") > 1):
        raise UserError(f"model '{ref}' does not exist; train one first (detox-sft), or fix --model")
    family = card.get("family")
    if family not in ("causal", "seq2seq"):
        from detoxrl.models.loading import model_family, read_config
        from detoxrl.models.refs import resolve_model

        family = model_family(read_config(resolve_model(weights)))
    return CurrentModel(ref, weights, card, family, model_version(path))


# ----------------------------------------------------------------------------------- the steps


def run_sft_step(cfg: FeedbackTrainConfig, data: FeedbackData, parent: CurrentModel, out: str, data_dir: str) -> dict:
    from sft.train import run_configs

    data_file = os.path.join(data_dir, "sft.jsonl")
    counts = write_sft_data(cfg, data, data_file)
    values = {"dataset": data_file, "dataset_format": "instruction", "deduplicate": False,
              "model_name_or_path": parent.weights, "output_dir": out, "loss": cfg.sft_loss,
              "max_steps": cfg.sft_max_steps, "learning_rate": cfg.sft_learning_rate,
              "per_device_train_batch_size": cfg.sft_batch_size, "eval_strategy": "no", "save_strategy": "no",
              "warmup_steps": 0.1, "seed": cfg.seed, **asdict(parent.prompt_config()), **assignments(cfg.sft_overrides)}
    log.info("SFT step: %s over %s", values, cfg.sft_config)
    summary = run_configs(*_sft_parse(cfg.sft_config, values))
    return {**counts, **{k: v for k, v in summary.items() if isinstance(v, (int, float, str))}}


def kto_examples(data: FeedbackData) -> list[tuple[str, str, bool]]:
    return [(i, o, bool(y)) for i, o, y in data.verdicts]


def run_kto_step(cfg: FeedbackTrainConfig, data: FeedbackData, base: CurrentModel, out: str) -> dict:
    """TRL KTOTrainer on the verdicts, a fresh LoRA adapter on ``base``; saves adapter/ merged/ detoxrl.json."""
    import torch
    from datasets import Dataset
    from trl import KTOConfig, KTOTrainer

    from detoxrl.models.config import DetoxModelConfig
    from detoxrl.models.loading import load_model, peft_config
    from detoxrl.prompts import PromptFormatter
    from feedback.preference_train import train_adapter, write_step_card

    if base.family != "causal":
        raise UserError(f"verdicts: kto trains causal models only (TRL's KTOTrainer), and '{base.ref}' is seq2seq; "
                        "use verdicts: reward_model to train a feedback reward model for PPO (w_feedback)")
    examples = kto_examples(data)
    n_good = sum(1 for *_, y in examples if y)
    n_bad = len(examples) - n_good
    model_cfg = DetoxModelConfig(model_name_or_path=base.weights, finetuning="lora", lora_r=cfg.kto_lora_r,
                                 lora_alpha=cfg.kto_lora_alpha, lora_target_modules=list(cfg.kto_lora_target_modules))
    loaded = load_model(model_cfg, apply_adapter=False)
    tok = loaded.tokenizer
    formatter = PromptFormatter(base.prompt_config(), tok, "causal")
    rows = [{"prompt": formatter.prompt(i), "completion": o, "label": y} for i, o, y in examples]
    random.Random(cfg.seed).shuffle(rows)
    undesirable_weight = n_good / n_bad
    args = KTOConfig(
        output_dir=os.path.join(out, "kto-run"), max_steps=cfg.kto_max_steps, learning_rate=cfg.kto_learning_rate,
        per_device_train_batch_size=cfg.kto_batch_size, beta=cfg.kto_beta, max_length=cfg.kto_max_length,
        desirable_weight=1.0, undesirable_weight=undesirable_weight, bf16=False, fp16=False,
        activation_checkpointing=False, use_cpu=not torch.cuda.is_available(), report_to=[], save_strategy="no",
        logging_steps=max(1, cfg.kto_max_steps // 10), seed=cfg.seed, disable_tqdm=True, dataloader_num_workers=0,
        warmup_steps=0.1, lr_scheduler_type="cosine")
    trainer = KTOTrainer(model=loaded.model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                         peft_config=peft_config(model_cfg, loaded.model, "causal"))
    log.info("KTO step: %d desirable, %d undesirable examples (undesirable_weight %.3f), %d steps of %d", n_good,
             n_bad, undesirable_weight, cfg.kto_max_steps, cfg.kto_batch_size)
    result, minutes, last = train_adapter(trainer, tok, out, "kto-run")
    metrics = {"train_loss": result.training_loss, "train_minutes": round(minutes, 2), "desirable": n_good,
               "undesirable": n_bad, "undesirable_weight": undesirable_weight, "steps": trainer.state.global_step}
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "kl"):
        if key in last:
            metrics[f"last_{key.replace('/', '_')}"] = last[key]
    write_step_card(out, base, "causal", formatter.format, "feedback-kto", metrics)
    return metrics


def run_reward_model_step(cfg: FeedbackTrainConfig, data: FeedbackData, out: str) -> dict:
    from rewards.feedback_model import FeedbackModelTraining, train_feedback_model

    settings = FeedbackModelTraining(base_model=cfg.rm_base_model, max_length=cfg.rm_max_length,
                                     batch_size=cfg.rm_batch_size, learning_rate=cfg.rm_learning_rate,
                                     num_train_epochs=cfg.rm_epochs, seed=cfg.seed)
    return train_feedback_model(data.verdicts, out, settings)


def run_pairwise_reward_step(cfg: FeedbackTrainConfig, pairs: list, out: str) -> dict:
    from rewards.pairwise_model import PairwiseTraining, train_pairwise_model

    settings = PairwiseTraining(base_model=cfg.rm_base_model, max_length=cfg.rm_max_length,
                                batch_size=cfg.rm_batch_size, learning_rate=cfg.rm_learning_rate,
                                num_train_epochs=cfg.rm_epochs, seed=cfg.seed)
    return train_pairwise_model(pairs, out, settings)


def choose_verdict_step(cfg: FeedbackTrainConfig, data: FeedbackData, family: str, prefs=None,
                        version: str | None = None) -> str | None:
    """``kto`` | ``dpo`` | ``orpo`` | ``reward_model`` | None (with the reason logged or raised), before any model
    loads. ``prefs``: the store's ``PreferenceData``; ``version``: the current model's version."""
    counts = data.counts()
    good, bad = counts["desirable"], counts["undesirable"]
    if cfg.verdicts == "none":
        return None
    wanted = cfg.verdicts
    if wanted in ("dpo", "orpo", "pairwise_reward"):
        if wanted != "pairwise_reward":
            from feedback.preference_train import check_method

            check_method(wanted, family, cfg.model)
        pairs = prefs.pairs if prefs is not None else []
        if not pairs:
            raise UserError(f"verdicts: {wanted} needs preference pairs (a rejected rewrite with a correction, or an "
                            "accepted and a rejected rewrite of the same input); the store has none: collect "
                            "corrections, or set verdicts: kto / reward_model / none")
        if wanted != "pairwise_reward" and version and not cfg.collected_on and version not in prefs.model_versions:
            raise UserError(f"verdicts: {wanted}: the store's preference pairs reject rewrites of model version(s) "
                            f"{', '.join(prefs.model_versions)}, not of the current model ({version}); train from the "
                            "model that wrote them (--model), or name the versions to use with --collected_on")
        return wanted
    if wanted == "auto":
        wanted = "kto" if family == "causal" else "reward_model"
        if min(good, bad) < max(1, cfg.min_verdicts):
            log.info("verdicts: auto skips %s: %d desirable and %d undesirable examples (min_verdicts %d)", wanted,
                     good, bad, cfg.min_verdicts)
            return None
    elif wanted == "kto" and family != "causal":
        raise UserError("verdicts: kto trains causal models only (TRL's KTOTrainer), and this model is seq2seq; use "
                        "verdicts: reward_model to train a feedback reward model for PPO (w_feedback)")
    if min(good, bad) < 1:
        raise UserError(f"verdicts: {wanted} needs accepted and rejected examples; the store gives {good} desirable "
                        f"and {bad} undesirable ones (collect more, or set verdicts: none)")
    return wanted


# ----------------------------------------------------------------------------------- the run


def plan_line(data: FeedbackData, prefs, parent: CurrentModel, steps: list[str]) -> str:
    """What ``feedback train`` is about to train on, printed before any model loads."""
    c = data.counts()
    return (f"feedback train: {c['records']} records ({c['accepted']} accepted, {c['rejected']} rejected, "
            f"{c['corrections']} corrections) -> {c['sft_pairs']} SFT pairs, {c['desirable']} desirable and "
            f"{c['undesirable']} undesirable verdicts, {len(prefs.pairs)} preference pairs; steps: "
            f"{' + '.join(steps) or 'none'}; from {parent.ref} (version {parent.version})")


def _check_output(cfg: FeedbackTrainConfig, parent: CurrentModel) -> str:
    out = os.path.abspath(cfg.output_dir)
    parent_dir = os.path.dirname(find_card(parent.weights) or parent.weights) if os.path.isdir(parent.weights) else ""
    if parent_dir and (out == os.path.abspath(parent_dir) or os.path.abspath(parent.weights).startswith(out + os.sep)):
        raise UserError(f"output_dir '{cfg.output_dir}' holds the model being trained from; write the new version to "
                        "another folder (e.g. outputs/feedback/v2)")
    if has_card(out) and not cfg.overwrite:
        raise UserError(f"output_dir '{cfg.output_dir}' already holds a model; pick a new folder for the new version, "
                        "or pass --overwrite true")
    return out


def _append_card(out: str, card: dict, summary: dict) -> None:
    from detoxrl.model_card import append_section, table

    counts = summary["data"]
    append_section(out, "Feedback training", (
        f"Version `{card['version']}`, trained from `{card['parent_version']}` on {counts['records']} reviewer records "
        f"(steps: {', '.join(summary['steps'])}).\n\n" + table(["records", "count"], list(counts.items()), "lr")))


def run(cfg: FeedbackTrainConfig) -> dict:
    """Train the next model version from the store; returns the summary (also in detoxrl.json)."""
    from rewards.batching import set_torch_threads

    log.info("using %d torch threads", set_torch_threads(cfg.num_threads))
    check_push(cfg.push_to_hub, cfg.hub_model_id, cfg.output_dir)
    store = FeedbackStore(cfg.store, create=False)
    records = store.records(model_versions=cfg.collected_on or None)
    if not records:
        where = f" collected on {', '.join(cfg.collected_on)}" if cfg.collected_on else ""
        raise UserError(f"feedback store '{cfg.store}' has no records{where}; review some rewrites first "
                        "(detox-feedback serve) or add them (detox-feedback add)")
    data = feedback_data(records)
    prefs = preference_pairs(records)
    parent = current_model(cfg.model)
    out = _check_output(cfg, parent)
    verdict_step = choose_verdict_step(cfg, data, parent.family, prefs, parent.version)
    do_sft = cfg.sft and bool(data.pairs) and cfg.sft_max_steps > 0
    if cfg.sft and not data.pairs:
        log.info("SFT step skipped: no corrections or accepted rewrites in the store")
    do_kto = verdict_step == "kto" and cfg.kto_max_steps > 0
    do_pref = verdict_step in ("dpo", "orpo") and cfg.pref_max_steps > 0
    print(plan_line(data, prefs, parent, [s for s, on in (("sft", do_sft), ("kto", do_kto),
                                                           (verdict_step, do_pref),
                                                           ("reward_model", verdict_step == "reward_model"),
                                                           ("pairwise_reward", verdict_step == "pairwise_reward"))
                                          if on]),
          flush=True)
    reward_step = verdict_step in ("reward_model", "pairwise_reward")
    if not (do_sft or do_kto or do_pref or reward_step):
        raise UserError("nothing to train: no SFT pairs (corrections or accepted rewrites) and no verdict step; "
                        "collect more feedback, or check sft, verdicts and min_verdicts")
    os.makedirs(out, exist_ok=True)
    data_dir = os.path.join(out, "feedback_data")
    os.makedirs(data_dir, exist_ok=True)
    atomic_write_text(os.path.join(data_dir, "records.jsonl"),
                      "".join(json.dumps(r.as_dict(), ensure_ascii=False) + "\n" for r in records))
    save_resolved_config(os.path.join(out, "feedback_config.yaml"), cfg)
    summary: dict = {"data": {**data.counts(), **prefs.counts()}, "steps": [], "parent_version": parent.version, "store": store.path,
                     "record_ids": [min(data.record_ids), max(data.record_ids)]}
    start = time.perf_counter()
    policy = parent
    if do_sft:
        sft_out = os.path.join(out, "stages", "sft") if do_kto or do_pref else out
        summary["sft"] = run_sft_step(cfg, data, parent, sft_out, data_dir)
        summary["steps"].append("sft")
        policy = current_model(sft_out)
    if do_kto:
        summary["kto"] = run_kto_step(cfg, data, policy, out)
        summary["steps"].append("kto")
    if do_pref:
        from feedback.preference_train import run_preference_step

        summary[verdict_step] = run_preference_step(verdict_step, cfg, prefs.pairs, policy, out)
        summary["steps"].append(verdict_step)
    if reward_step:
        rm_dir = os.path.join(out, "feedback_reward")
        metrics = (run_reward_model_step(cfg, data, rm_dir) if verdict_step == "reward_model" else
                   run_pairwise_reward_step(cfg, prefs.pairs, rm_dir))
        summary["reward_model"] = {"path": rm_dir, "kind": verdict_step, **metrics}
        summary["steps"].append(verdict_step)
    summary["minutes"] = round((time.perf_counter() - start) / 60, 2)
    if not (do_sft or do_kto or do_pref):
        log.info("the policy is unchanged (no SFT pairs, no KTO, DPO or ORPO); use the feedback reward model in PPO with "
                 "--w_feedback 1 --feedback_model %s", summary["reward_model"]["path"])
        atomic_write_text(os.path.join(out, "feedback_summary.json"), json.dumps(summary, indent=2, default=str))
        return summary
    fields_ = {"stage": "feedback", "parent_version": parent.version,
               "feedback": {k: v for k, v in summary.items() if k != "parent_version"}}
    if reward_step:
        fields_["feedback_reward_model"] = summary["reward_model"]["path"]
    card = stamp_card(out, fields_)
    summary["version"] = card["version"]
    _append_card(out, card, summary)
    store.record_training(parent.version, card["version"], out, data.record_ids, summary)
    log.info("new model version %s in %s (%s; %.1f min)", card["version"], out, " + ".join(summary["steps"]),
             summary["minutes"])
    if cfg.push_to_hub:
        push_run(out, cfg.hub_model_id, cfg.hub_private_repo, None, f"detoxrl feedback: version {card['version']}")
    return summary

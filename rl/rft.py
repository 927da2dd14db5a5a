"""Rejection-sampling fine-tuning (expert iteration): ``detoxrl rft --config configs/rl/rft.yaml``.

Also ``rl/ppo.py --config configs/rl/rft.yaml`` (or ``--algorithm rft``): the PPO entry point hands over
here. Its own entry point because a round's training step is the supervised stage, whose options (loss,
mask strategy, batch size, epochs) clash with PPO's ``TrainingArguments`` in one parser; options in
``rl/rft_config.py``, the choice of sources and pairs in ``rl/rft_select.py``.

Round ``r`` (``checkpoint-<r>/`` in ``output_dir``):

1. the next ``sources_per_round`` training sources (those the SFT run never trained on first: its
   ``resolved_config.yaml`` names its data) x ``samples_per_source`` samples from the current model, scored
   by the composite reward in one call per batch (``detoxrl.rerank.best_of_n``, the best-of-n code path);
2. the kept pairs (``select_pairs``) go to ``checkpoint-<r>/data.jsonl`` with a few dev pairs for its
   eval_loss, every sample and score to ``rounds/round-<r>.jsonl``, the statistics to ``selection.json``;
3. ``sft/train.py`` trains a fresh adapter on them from the current model into ``checkpoint-<r>/`` (adapter/,
   merged/, detoxrl.json), with its own checkpoints every ``sft_save_steps``;
4. ``checkpoint-<r>/trainer_state.json`` (rounds done, the model to continue from, the per-round log) is
   written last: the round is complete. The next round samples from ``checkpoint-<r>/merged``.

Resume (``resume_from_checkpoint: latest``): the last complete round is loaded; a round cut short resumes
where it stopped (its data file is reused, its SFT resumes from its checkpoint). Sampling is seeded with
``seed + r`` and each round's SFT with ``seed + r``, so a resumed run gives the same model as an
uninterrupted one. After the last round: ``merged/`` (the last round's model), ``detoxrl.json`` (stage
``rft``, parent: the SFT run), ``README.md`` with the rounds and the before/after dev metrics,
``resolved_config.yaml``. Logged per round: the kept share, the mean score of kept vs all samples (and of the
best per source), the copy rate of kept vs all samples, the truncated share and the time of each phase.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__" and __package__ in (None, ""):
    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import json
import logging
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, field, fields

from detoxrl.config import DetoxParser, assignments, run_cli, save_resolved_config
from detoxrl.data import DataConfig, Pair, group_references, load_detox_data, write_instruction_json
from detoxrl.errors import UserError
from detoxrl.generate import GenerationSettings
from detoxrl.io import atomic_directory, atomic_write_text
from detoxrl.model_card import OWN_JUDGES, PROJECT, before_after, table, write_model_card
from detoxrl.log import setup_logging
from detoxrl.models.runs import read_run
from detoxrl.paths import resolve_path
from detoxrl.rerank import best_of_n
from detoxrl.resume import checkpoints, latest_checkpoint
from detoxrl.runcard import build_card, write_card
from detoxrl.vocab import VocabConfig, load_lexicon
from rewards.composite import CompositeReward, RewardConfig
from rl.config import reward_alias
from rl.rft_config import RFTConfig
from rl.rft_select import Selection, Source, round_sources, select_pairs, source_pool

log = logging.getLogger("detoxrl")
CONFIGS = [DataConfig, VocabConfig, RewardConfig, RFTConfig]
STATE = "trainer_state.json"
DATA = "data.jsonl"
SELECTION = "selection.json"


def parser() -> DetoxParser:
    """The stage's parser: ``parser().parse(argv)``, or ``parser().parse_mapping(values, yaml)`` from Python."""
    return DetoxParser(CONFIGS, prog="rl/rft.py", aliases=reward_alias)


def parse(args=None):
    return parser().parse(args)


@dataclass
class RFTState:
    """What ``checkpoint-<r>/trainer_state.json`` holds."""

    round: int = 0
    model: str = ""  # the run folder the next round samples from (checkpoint-<r>, or the SFT run)
    before: dict = field(default_factory=dict)
    log_history: list[dict] = field(default_factory=list)
    algorithm: str = "rft"


def sft_used_groups(run_ref: str) -> set[str] | None:
    """The source groups the SFT run at ``run_ref`` trained on (from its ``resolved_config.yaml``); None if unknown."""
    import yaml

    path = os.path.join(run_ref, "resolved_config.yaml")
    if not os.path.isfile(path):
        log.info("rft: %s has no resolved_config.yaml; every training source counts as unseen by SFT", run_ref)
        return None
    with open(path, encoding="utf-8") as fh:
        section = (yaml.safe_load(fh) or {}).get("DataConfig") or {}
    known = {f.name for f in fields(DataConfig)}
    data = load_detox_data(DataConfig(**{k: v for k, v in section.items() if k in known}))
    return {p.group for p in data.train}


def check_inputs(cfg: RFTConfig):
    """``(SFT run folder, its RunInfo, sft_config path)``; one-line errors before any work."""
    ref = resolve_path(cfg.model_name_or_path) or cfg.model_name_or_path
    start = read_run(ref)
    if not start.card:
        raise UserError(f"model_name_or_path '{cfg.model_name_or_path}' is not a detoxrl run folder (no detoxrl.json); "
                        "give the SFT run RFT starts from (outputs/sft/default)")
    sft_config = resolve_path(cfg.sft_config) or cfg.sft_config
    if not os.path.isfile(sft_config):
        raise UserError(f"sft_config '{cfg.sft_config}' not found (e.g. configs/sft/default.yaml)")
    return os.path.abspath(ref), start, sft_config


class RFTTrainer:
    """The rounds (see the module docstring). ``reward(sources, outputs)`` returns a ``RewardBreakdown``."""

    def __init__(self, cfg: RFTConfig, reward, pool: list[Source], dev_sources: list[str] | None = None,
                 dev_references: list[list[str]] | None = None, dev_pairs: list[Pair] | None = None,
                 lexicon=None, vocab: VocabConfig | None = None):
        if not pool:
            raise UserError("rft: no training sources (check the dataset)")
        self.cfg, self.reward, self.pool = cfg, reward, pool
        self.dev_sources, self.dev_references = dev_sources or [], dev_references or []
        self.dev_pairs = [Pair(p.source, p.target, split="dev") for p in (dev_pairs or [])]
        self.lexicon, self.vocab = lexicon, vocab or VocabConfig()
        self.out = cfg.output_dir
        self.start, self.start_run, self.sft_config = check_inputs(cfg)
        self.state = RFTState(model=self.start)
        self._writer = None

    # ------------------------------------------------------------------------------------------ helpers
    def round_dir(self, r: int) -> str:
        return os.path.join(self.out, f"checkpoint-{r}")

    def model_dir(self, ref: str) -> str:
        """``state.model`` as a folder: the SFT run (absolute) or ``checkpoint-<r>`` of this run."""
        return ref if os.path.isabs(ref) else os.path.join(self.out, ref)

    def score(self, sources: list[str], outputs: list[str]) -> list[float]:
        return self.reward(sources, outputs).total.tolist()

    def evaluate(self, run_dir: str) -> dict:
        """Greedy dev metrics of the model in ``run_dir`` with the reward's judges (``rl/dev_eval.py``)."""
        if not self.dev_sources:
            return {}
        from detoxrl.models.trained import load_trained
        from rl.dev_eval import dev_evaluator

        trained = load_trained(run_dir)
        evaluate = dev_evaluator(trained.formatter, self.lexicon, self.reward, self.dev_sources, self.dev_references,
                                 self.cfg.max_new_tokens)
        return evaluate(trained.model)

    # ------------------------------------------------------------------------------------------ one round
    def sample_round(self, r: int, run_dir: str) -> Selection:
        """Sample, score and select round ``r``; writes its data file, samples and statistics."""
        from detoxrl.devices import resolve_device
        from detoxrl.models.trained import load_trained

        cfg, rdir = self.cfg, self.round_dir(r)
        sources = round_sources(self.pool, r, cfg.sources_per_round)
        trained = load_trained(run_dir)
        model = trained.model.to(resolve_device("auto"))
        settings = GenerationSettings(max_new_tokens=cfg.max_new_tokens, do_sample=True, temperature=cfg.temperature,
                                      top_p=cfg.top_p, gen_batch_size=cfg.gen_batch_size,
                                      best_of=cfg.samples_per_source, seed=cfg.seed + r)
        result = best_of_n(model, trained.formatter, [s.text for s in sources], settings, self.score,
                           cfg.truncation_penalty, progress=True)
        del model, trained
        sel = select_pairs(sources, result.candidates, result.scores, result.best, cfg.min_reward, cfg.fallback, r,
                           result.truncated)
        sel.stats.update({"round": r, "sample_s": round(result.generate_seconds, 2),
                          "score_s": round(result.rerank_seconds, 2)})
        rows = [{"source": s.text, "unseen_by_sft": not s.seen_by_sft, "best": b, "kept": i in sel.kept,
                 "fallback": i in sel.fallback, "samples": c, "scores": [round(v, 4) for v in sc],
                 "truncated": t} for i, (s, c, sc, t, b) in
                enumerate(zip(sources, result.candidates, result.scores, result.truncated, result.best))]
        atomic_write_text(os.path.join(self.out, "rounds", f"round-{r}.jsonl"),
                          "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
        if not sel.pairs:
            raise UserError(f"rft round {r}: no source's best sample scored >= min_reward {cfg.min_reward} (best "
                            f"mean {sel.stats['reward_best']:.3f}); lower min_reward or set fallback: reference")
        os.makedirs(rdir, exist_ok=True)
        write_instruction_json(sel.pairs + self.dev_pairs, os.path.join(rdir, DATA))
        atomic_write_text(os.path.join(rdir, SELECTION), json.dumps(sel.stats, indent=1) + "\n")  # written last
        return sel

    def sft_configs(self, r: int, run_dir: str, resume: bool) -> tuple:
        """Round ``r``'s supervised-stage configs: ``sft_config`` with the round's fields on top, training from the
        model in ``run_dir``."""
        from sft.train import parser

        cfg, rdir = self.cfg, self.round_dir(r)
        values = {"dataset": os.path.join(rdir, DATA), "dataset_format": "instruction", "deduplicate": False,
                  "model_name_or_path": read_run(run_dir).weights, "output_dir": rdir, "loss": cfg.sft_loss,
                  "learning_rate": cfg.sft_learning_rate, "per_device_train_batch_size": cfg.sft_batch_size,
                  "num_train_epochs": cfg.sft_epochs, "max_steps": -1, "save_steps": cfg.sft_save_steps,
                  "eval_strategy": "no", "guard_samples": 0, "eval_max_pairs": max(1, len(self.dev_pairs)),
                  "seed": cfg.seed + r, "report_to": cfg.report_to}
        values.update({f.name: getattr(self.vocab, f.name) for f in fields(VocabConfig)
                       if getattr(self.vocab, f.name) not in (None, [])})
        values.update(asdict(self.start_run.prompt_config()))
        values.update(assignments(cfg.sft_overrides))
        if resume:
            values["resume_from_checkpoint"] = "latest"
        return parser().parse_mapping(values, self.sft_config)

    def run_sft(self, configs: tuple) -> dict:
        from sft.train import run_configs

        return run_configs(*configs)

    # ------------------------------------------------------------------------------------------ the run
    def _begin(self, resume) -> bool:
        """Load the state to continue from (``resume``: None, latest/true, or a checkpoint folder); returns
        whether an unfinished round may be picked up."""
        if resume in (None, "", False, "false", "False"):
            stale = [d for d in os.listdir(self.out) if d.startswith("checkpoint-")] if os.path.isdir(self.out) else []
            for name in stale:  # an earlier run's rounds must never be resumed by mistake
                shutil.rmtree(os.path.join(self.out, name), ignore_errors=True)
            return False
        path = latest_checkpoint(self.out) if resume in (True, "true", "True", "latest") else resume
        if path is None:
            log.info("rft: no complete round in %s; starting at round 1 (an unfinished one is picked up)", self.out)
            return True
        state_file = os.path.join(path, STATE)
        raw = json.load(open(state_file, encoding="utf-8")) if os.path.isfile(state_file) else {}
        if raw.get("algorithm") != "rft":
            raise UserError(f"resume_from_checkpoint: '{path}' is not an RFT round checkpoint (no trainer_state.json "
                            "with algorithm rft); pass a checkpoint-<round> folder of an RFT run, or latest")
        self.state = RFTState(**raw)
        log.info("rft: resumed after round %d (%s)", self.state.round, path)
        return True

    def train(self, resume=None) -> dict:
        cfg = self.cfg
        start_time = time.perf_counter()
        pick_up = self._begin(resume)
        if cfg.eval_samples and not self.state.before:
            self.state.before = self.evaluate(self.model_dir(self.state.model))
            log.info("dev before RFT: %s", _fmt(self.state.before))
        while self.state.round < cfg.rounds:
            r = self.state.round + 1
            rdir, t0 = self.round_dir(r), time.perf_counter()
            partial = pick_up and os.path.isfile(os.path.join(rdir, SELECTION))
            if partial:
                with open(os.path.join(rdir, SELECTION), encoding="utf-8") as fh:
                    stats = json.load(fh)
                log.info("rft round %d: reusing its sampled data (%d pairs)", r, stats["pairs"])
            else:
                shutil.rmtree(rdir, ignore_errors=True)
                stats = self.sample_round(r, self.model_dir(self.state.model)).stats
            t1 = time.perf_counter()
            inner = [d for d in checkpoints(rdir)]
            self.run_sft(self.sft_configs(r, self.model_dir(self.state.model), resume=partial and bool(inner)))
            for d in checkpoints(rdir):  # the SFT's own checkpoints served the mid-round resume
                shutil.rmtree(d, ignore_errors=True)
            stats.update({"sft_s": round(time.perf_counter() - t1, 2), "round_s": round(time.perf_counter() - t0, 2),
                          "minutes": round((time.perf_counter() - start_time) / 60, 2)})
            self.state.round, self.state.model = r, f"checkpoint-{r}"
            self.state.log_history.append(stats)
            atomic_write_text(os.path.join(rdir, STATE), json.dumps(asdict(self.state), indent=1) + "\n")
            self._log(stats)
            self._prune()
        final = self.model_dir(self.state.model)
        after = self.evaluate(final) if cfg.eval_samples else {}
        if after:
            log.info("dev after RFT: %s", _fmt(after))
        if self._writer is not None:
            self._writer.close()
        return {"before": self.state.before, "after": after, "rounds": self.state.round, "model": final,
                "log": self.state.log_history}

    def _log(self, s: dict) -> None:
        log.info("rft round %d/%d: %d sources x %d samples; kept %.0f%% (+%d references, %d skipped); score all %.3f, "
                 "best %.3f, kept %.3f; copy all %.1f%%, kept %.1f%%; sample %.0f s, score %.0f s, sft %.0f s",
                 s["round"], self.cfg.rounds, s["sources"], self.cfg.samples_per_source, 100 * s["kept_share"],
                 s["fallback"], s["skipped"], s["reward_all"], s["reward_best"], s["reward_kept"],
                 100 * s["copy_all"], 100 * _nan0(s["copy_kept"]), s["sample_s"], s["score_s"], s["sft_s"])
        if "tensorboard" not in (self.cfg.report_to or ""):
            return
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(os.path.join(self.out, "runs"))
        for key, value in s.items():
            if isinstance(value, (int, float)) and key != "round" and not math.isnan(value):
                self._writer.add_scalar(f"rft/{key}", value, s["round"])
        self._writer.flush()

    def _prune(self) -> None:
        """Keep the newest ``save_total_limit`` round checkpoints (their samples stay in rounds/)."""
        for old in checkpoints(self.out)[: -self.cfg.save_total_limit]:
            shutil.rmtree(old, ignore_errors=True)


def _nan0(x: float) -> float:
    return 0.0 if isinstance(x, float) and math.isnan(x) else x


def _fmt(metrics: dict) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, float) and not math.isnan(v))


# ---------------------------------------------------------------------------------------------- saving


def save_result(trainer: RFTTrainer, summary: dict, reward_text: str) -> None:
    """merged/ (the last round's model), detoxrl.json (stage rft) and README.md in ``output_dir``."""
    cfg, out = trainer.cfg, trainer.out
    final = read_run(summary["model"])
    with atomic_directory(os.path.join(out, "merged")) as tmp:
        shutil.copytree(final.weights, tmp, dirs_exist_ok=True)
    start = trainer.start_run
    from detoxrl.models.loading import load_tokenizer
    from detoxrl.prompts import PromptFormatter

    family = start.card.get("family", "causal")
    fmt = PromptFormatter(start.prompt_config(), load_tokenizer(final.weights), family).format
    extra = {"finetuning": final.card.get("finetuning"), "stage": "rft", "parent": cfg.model_name_or_path,
             "metrics": summary_metrics(summary)}
    write_card(out, build_card(family, start.base_model or start.weights, start.prompt_config(), fmt,
                               start.generation(), extra))
    round_rows = [[s["round"], f"{s['kept']} / {s['sources']}", s["fallback"], f"{s['reward_all']:.3f}",
                   f"{s['reward_best']:.3f}", f"{s['reward_kept']:.3f}", f"{100 * s['copy_all']:.1f}%",
                   f"{100 * _nan0(s['copy_kept']):.1f}%", f"{s['minutes']:.1f}"] for s in summary["log"]]
    rounds = table(["round", "kept", "fallback", "score of all samples", "best per source", "kept", "copy (all)",
                    "copy (kept)", "minutes"], round_rows, "r" * 9)
    write_model_card(out, start.base_model or start.weights, ["rft"], (
        f"Trained with {PROJECT}'s rejection-sampling fine-tuning (expert iteration) from the\nSFT model "
        f"`{cfg.model_name_or_path}`: each round samples {cfg.samples_per_source} rewrites per training source, keeps "
        f"the best one whose reward\nis >= {cfg.min_reward} (fallback: {cfg.fallback}) and fine-tunes on the kept "
        f"pairs ({cfg.sft_loss} loss)."), {
            "reward": reward_text,
            "rounds": f"{summary['rounds']} x {cfg.sources_per_round} sources x {cfg.samples_per_source} samples "
                      f"(temperature {cfg.temperature})",
            "run time": f"{summary.get('train_minutes', 0.0):.1f} min"},
        [("Rounds", rounds), (f"Dev metrics before and after ({len(trainer.dev_sources)} dev inputs, greedy decoding)",
                              OWN_JUDGES + "\n\n" + before_after(summary.get("before", {}), summary.get("after", {})))])


def summary_metrics(summary: dict) -> dict:
    return {"before": summary.get("before", {}), "after": summary.get("after", {}), "rounds": summary.get("rounds"),
            "train_minutes": summary.get("train_minutes"),
            "log": [{k: v for k, v in s.items() if not (isinstance(v, float) and math.isnan(v))}
                    for s in summary.get("log", [])]}


def run(args=None) -> dict:
    """The stage from a command line (``args``; default ``sys.argv``)."""
    setup_logging()
    return run_configs(*parse(args))


def run_configs(data_cfg: DataConfig, vocab_cfg: VocabConfig, reward_cfg: RewardConfig, cfg: RFTConfig) -> dict:
    """The stage from its parsed configs (``parse``'s four, in order): the rounds, then merged/, the cards and the
    resolved config; returns the summary."""
    start = time.perf_counter()
    trainer = build_rft(data_cfg, vocab_cfg, reward_cfg, cfg)
    summary = trainer.train(resume=cfg.resume_from_checkpoint)
    summary["train_minutes"] = round((time.perf_counter() - start) / 60, 2)
    save_result(trainer, summary, trainer.reward.describe())
    save_resolved_config(os.path.join(cfg.output_dir, "resolved_config.yaml"), data_cfg, vocab_cfg, reward_cfg, cfg)
    log.info("saved to %s: merged/, detoxrl.json, README.md (%.1f min)", cfg.output_dir, summary["train_minutes"])
    return summary


def build_rft(data_cfg: DataConfig, vocab_cfg: VocabConfig, reward_cfg: RewardConfig, cfg: RFTConfig) -> RFTTrainer:
    """The ``RFTTrainer``, ready to ``train()``: one-line checks first (one process, the checkpoint to resume, the
    start run), then the data (sources the SFT run never saw first), the dev sample and the reward."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError("rft runs as one process (its rounds sample, score and train in turn); start it without "
                        "--num_processes / torchrun")
    if cfg.resume_from_checkpoint not in (None, "", "latest", "true", "True", "false", "False") and not os.path.isfile(
            os.path.join(cfg.resume_from_checkpoint, STATE)):
        raise UserError(f"resume_from_checkpoint: '{cfg.resume_from_checkpoint}' is not an RFT round checkpoint (no "
                        f"{STATE}); pass a checkpoint-<round> folder of an RFT run, or latest")
    check_inputs(cfg)
    from transformers import set_seed

    set_seed(cfg.seed)
    data = load_detox_data(data_cfg)
    sft_ref = resolve_path(cfg.model_name_or_path) or cfg.model_name_or_path
    used = sft_used_groups(sft_ref) if os.path.isdir(sft_ref) else None
    pool = source_pool(data.train, used, cfg.seed)
    log.info("rft: %d training sources, %d of them unseen by the SFT run (those come first)", len(pool),
             sum(not s.seen_by_sft for s in pool))
    dev_sources, dev_refs = group_references(data.dev, cfg.eval_samples or None, cfg.seed)
    dev_pairs = random.Random(cfg.seed).sample(data.dev, min(cfg.sft_eval_pairs, len(data.dev)))
    if not cfg.eval_samples:
        dev_sources, dev_refs = [], []
    reward = CompositeReward(reward_cfg, vocab_cfg)
    log.info("reward: %s", reward.describe())
    return RFTTrainer(cfg, reward, pool, dev_sources, dev_refs, dev_pairs, load_lexicon(vocab_cfg), vocab_cfg)


def main(args=None) -> int:
    return run_cli(run, args)


if __name__ == "__main__":
    raise SystemExit(main())

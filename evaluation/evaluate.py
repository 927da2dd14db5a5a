"""``detox-eval``: score detox systems side by side with judges configured apart from the reward.

    detox-eval --config configs/eval/default.yaml --systems duplicate delete sft=runs/sft
    detox-eval --systems runs/sft/merged preds=outputs/preds.txt --max_eval_sentences 200

Test set: the ``DataConfig`` data (default ParaDetox) split by the core loader; ``eval_split`` picks
dev (default), train or all. Pairs that share a source form one test sentence whose targets are its
references (ParaDetox has 1-3 per source).

Systems (``systems``, see ``evaluation/systems.py``): the baselines ``duplicate`` and ``delete``, a
predictions file, or a model (merged folder, adapter folder, SFT output folder, hub id), decoded in
batches by the core ``generate_rewrites`` with the ``GenerationSettings`` of this run (the same for
every model). Judges: ``EvalJudgesConfig`` (``judge_*`` fields), never the reward's settings; by
default independent of the reward (see ``evaluation/judges.py``), and a warning names any judge that
is the model an evaluated run was rewarded with (its ``resolved_config.yaml`` says).

Output, written atomically into ``output_dir``: ``eval.json`` (everything), ``eval.md`` (the table),
``eval_sentences.tsv`` (one row per system and sentence) and ``resolved_config.yaml``. Every number
is defined in ``evaluation/report.py``.

Best-of-n systems (``ppo=outputs/rl/default@best_of=8``, or ``best_of`` > 1 for every model) sample N
rewrites per sentence (``temperature``, ``top_p``, ``seed``) and keep the one the composite reward of
``rerank_config`` scores highest (``detoxrl/rerank.py``); their row's sent/s counts generation plus
reranking, and ``eval.json`` gives both times. A warning names any evaluation judge that is also a model
of the reranking reward (the reranker must share no model with the judges for the score to be honest).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

from detoxrl.config import DetoxParser, run_cli, save_resolved_config
from detoxrl.data import DataConfig, group_references, load_detox_data
from detoxrl.errors import UserError
from detoxrl.generate import GenerationSettings, generate_rewrites
from detoxrl.log import setup_logging
from detoxrl.prompts import PromptConfig
from detoxrl.rerank import best_of_n
from detoxrl.validate import ENCODING_HELP, check_generation
from detoxrl.vocab import VocabConfig, load_lexicon
from evaluation import baselines
from rewards.batching import check_device, set_torch_threads
from evaluation.judges import EvalJudgesConfig, Judges, run_reward_config
from evaluation.predictions import check_predictions, read_predictions
from evaluation.report import markdown_table, sentence_rows, system_scores, write_reports
from evaluation.systems import System, load_system_model, parse_system

log = logging.getLogger("detoxrl.rewards")


@dataclass
class EvalConfig:
    """What to evaluate and where to write the report."""

    systems: list[str] = field(
        default_factory=lambda: ["duplicate", "delete"],
        metadata={"help": "Systems, each [name=]what: duplicate | delete | a predictions file (.txt/.tsv/.csv/"
                  ".jsonl) | a model folder (merged, adapter, or detox-sft output) | a hub id. A model may end in "
                  "@best_of=N[,temperature=T,top_p=P,seed=S]: best-of-N decoding for that system only."},
    )
    output_dir: str = field(default="outputs/eval", metadata={"help": "Where eval.json, eval.md and the TSV go."})
    eval_split: Literal["dev", "train", "all"] = field(
        default="dev", metadata={"help": "Which split of the DataConfig data to evaluate on."})
    max_eval_sentences: int | None = field(
        default=None, metadata={"help": "Evaluate a seeded random sample of N test sentences (unset: all)."})
    eval_device: str = field(default="auto", metadata={"help": "Device of the evaluated models: auto | cpu | cuda."})
    num_threads: int = field(
        default=0, metadata={"help": "torch CPU threads; 0: the cores not busy at start (see rewards/batching.py)."})
    encoding_errors: Literal["strict", "replace"] = field(
        default="strict", metadata={"help": "Predictions files: " + ENCODING_HELP})
    rerank_config: str | None = field(
        default=None,
        metadata={"help": "Best-of-n systems (a spec ending in @best_of=N, or best_of > 1): the reward config whose "
                  "composite reward picks each sentence's rewrite (unset: the reward each model's run was trained "
                  "with, else configs/rewards/default.yaml). It must share no model with the judges."})

    def __post_init__(self):
        if isinstance(self.systems, str):
            self.systems = [self.systems]
        if not self.systems:
            raise ValueError("systems is empty; name at least one: duplicate, delete, a predictions file or a model")
        if self.max_eval_sentences is not None and self.max_eval_sentences < 1:
            raise ValueError(f"max_eval_sentences must be >= 1 or unset (got {self.max_eval_sentences})")
        check_device("eval_device", self.eval_device)
        if self.num_threads < 0:
            raise ValueError(f"num_threads must be >= 0 (got {self.num_threads})")


@dataclass
class TestSet:
    sources: list[str]
    references: list[list[str]]
    description: dict


def load_test_set(data_cfg: DataConfig, split: str, limit: int | None) -> TestSet:
    """Test sentences of one split; pairs sharing a source group become one sentence with several references."""
    data = load_detox_data(data_cfg)
    pairs = {"dev": data.dev, "train": data.train, "all": data.all}[split]
    # A limit draws a seeded sample: ParaDetox is not shuffled, so its front is not representative.
    sources, references = group_references(pairs, limit or None, seed=data_cfg.split_seed)
    if not sources:
        raise UserError(f"the {split} split of '{data.source}' is empty; set eval_split or dev_size")
    desc = {"source": data.source, "split": split, "sentences": len(sources),
            "references": sum(len(r) for r in references)}
    return TestSet(sources, references, desc)


def system_settings(system: System, generation: GenerationSettings) -> GenerationSettings:
    """The decoding of ``system``: the eval run's settings with the spec's ``@`` options (checked, one line)."""
    settings = replace(generation, **system.decoding)
    try:
        check_generation(asdict(settings))
    except UserError as exc:
        raise UserError(f"systems: {system.name}: {exc}") from None
    return settings


class LazyReranker:
    """The composite reward of ``rerank_config`` (unset: the one ``model``'s run was trained with), loaded on first
    use (only best-of-n systems need it)."""

    def __init__(self, config: str | None, model: str | None = None):
        from rewards.scorer import reward_source

        self.reward_cfg, self.vocab, self.config = reward_source(config, model)  # a bad file fails here
        self._scorer = None

    def __call__(self, sources, outputs):
        if self._scorer is None:
            from rewards.composite import CompositeReward
            from rewards.scorer import RewardScorer

            self._scorer = RewardScorer(CompositeReward(self.reward_cfg, self.vocab), self.config)
            log.info("reranker: %s", self._scorer.describe())
        return self._scorer(sources, outputs)

    def describe(self) -> str:
        return self._scorer.describe() if self._scorer is not None else f"composite reward ({self.config})"


def produce_outputs(system: System, sources: list[str], vocab: VocabConfig, prompt: PromptConfig,
                    generation: GenerationSettings, device: str, encoding_errors: str = "strict",
                    reranker=None) -> tuple[list[str], float | None, str, dict]:
    """(outputs, seconds spent producing them or None for a file, description, best-of-n timings)."""
    if system.kind == "predictions":
        return read_predictions(system.ref, sources, encoding_errors), None, f"predictions {system.ref}", {}
    if system.kind == "baseline":
        lexicon = load_lexicon(vocab) if system.ref == "delete" else None
        start = time.perf_counter()
        outputs = baselines.duplicate(sources) if lexicon is None else baselines.delete(sources, lexicon)
        what = "output = input" if lexicon is None else f"delete {lexicon.summary().split(';')[0]} words"
        return outputs, time.perf_counter() - start, what, {}
    model, formatter, what = load_system_model(system.ref, prompt, device)
    settings = system_settings(system, generation)
    extra: dict = {}
    start = time.perf_counter()
    if settings.best_of > 1:
        result = best_of_n(model, formatter, sources, settings, reranker, progress=True)
        outputs = result.outputs
        extra = {"best_of": settings.best_of, "temperature": settings.temperature, "top_p": settings.top_p,
                 "seed": settings.seed, "sampling_seconds": round(result.generate_seconds, 2),
                 "rerank_seconds": round(result.rerank_seconds, 2), "reranker": reranker.describe()}
        log.info("%s: best of %d: generation %.1f s, reranking %.1f s", system.name, settings.best_of,
                 result.generate_seconds, result.rerank_seconds)
        what += f"; best of {settings.best_of}"
    else:
        outputs = generate_rewrites(model, formatter, sources, settings, progress=True)
    seconds = time.perf_counter() - start
    del model
    return outputs, seconds, what, extra


def rerank_judge_warnings(rerankers: dict[str, LazyReranker], judges_cfg: EvalJudgesConfig) -> list[str]:
    """A warning per best-of-n system whose reranking reward uses a model that is also an evaluation judge."""
    out = []
    for name, reranker in rerankers.items():
        same = judges_cfg.reward_overlap(asdict(reranker.reward_cfg))
        if same:
            out.append(f"{name}: best-of-n reranked by a reward ({reranker.config}) that uses a judge: "
                       f"{', '.join(same)}")
            log.warning("%s", out[-1])
    return out


def reward_judge_warnings(systems: list[System], judges_cfg: EvalJudgesConfig) -> list[str]:
    """One warning per model system whose run (its ``resolved_config.yaml``) was rewarded by an eval judge."""
    out = []
    for system in systems:
        reward = run_reward_config(system.ref) if system.kind == "model" else None
        same = judges_cfg.reward_overlap(reward) if reward else []
        if same:
            out.append(f"{system.name}: judged by the model its run was rewarded with: {', '.join(same)}")
            log.warning("%s", out[-1])
    return out


def evaluate(cfg: EvalConfig, judges_cfg: EvalJudgesConfig, data_cfg: DataConfig, vocab: VocabConfig,
             prompt: PromptConfig, generation: GenerationSettings) -> dict:
    """Run every system, judge it, write the reports; returns the report dict."""
    systems = [parse_system(s) for s in cfg.systems]
    names = [s.name for s in systems]
    if len(set(names)) != len(names):
        raise UserError(f"systems: two systems share a name ({', '.join(names)}); name them with name=what")
    for s in systems:  # every predictions file decodes and parses, before anything is loaded
        if s.kind == "predictions" and os.path.isfile(s.ref):
            check_predictions(s.ref, cfg.encoding_errors)
    rerankers = {s.name: LazyReranker(cfg.rerank_config, s.ref) for s in systems
                 if s.kind == "model" and system_settings(s, generation).best_of > 1}
    log.info("using %d torch threads", set_torch_threads(cfg.num_threads))
    test = load_test_set(data_cfg, cfg.eval_split, cfg.max_eval_sentences)
    log.info("test set: %d sentences, %d references", len(test.sources), test.description["references"])
    # Predictions files are read before the judges load, so a bad file fails before any work.
    files = {s.name: (read_predictions(s.ref, test.sources, cfg.encoding_errors), None, f"predictions {s.ref}")
             for s in systems if s.kind == "predictions"}
    judges = Judges(judges_cfg, vocab)
    results, rows = {}, []
    for system in systems:
        outputs, seconds, what, extra = (*files[system.name], {}) if system.name in files else produce_outputs(
            system, test.sources, vocab, prompt, generation, cfg.eval_device, cfg.encoding_errors,
            rerankers.get(system.name))
        start = time.perf_counter()
        judged = judges.score(test.sources, outputs, test.references)
        judge_seconds = time.perf_counter() - start
        scores = system_scores(test.sources, outputs, test.references, judged, seconds)
        results[system.name] = {"kind": system.kind, "what": what, "scores": scores,
                                "generation_seconds": seconds, "judge_seconds": round(judge_seconds, 2), **extra}
        rows += sentence_rows(system.name, test.sources, outputs, test.references, judged)
        log.info("%s: J %.3f STA %.3f SIM %.3f FL(ChrF) %.3f | J_LM %.3f FL_LM %.3f (judged in %.1fs)", system.name,
                 scores["J"], scores["STA"], scores["SIM"], scores["FL"], scores["J_LM"], scores["FL_LM"],
                 judge_seconds)
    report = {"test_set": test.description, "judges": judges_cfg.describe(), "generation": asdict(generation),
              "warnings": reward_judge_warnings(systems, judges_cfg) + rerank_judge_warnings(rerankers, judges_cfg),
              "systems": results}
    paths = write_reports(cfg.output_dir, report, rows)
    save_resolved_config(os.path.join(cfg.output_dir, "resolved_config.yaml"), cfg, judges_cfg, data_cfg, vocab,
                         prompt, generation)
    print("judges: " + "; ".join(f"{k} = {v}" for k, v in report["judges"].items()))
    print(markdown_table(results))
    print(f"wrote {paths['json']}, {paths['markdown']}, {paths['tsv']}")
    return report


CONFIGS = [EvalConfig, EvalJudgesConfig, DataConfig, VocabConfig, PromptConfig, GenerationSettings]


def parser() -> DetoxParser:
    """``detox-eval``'s parser: ``parser().parse(argv)``, or ``parser().parse_mapping(values, yaml)`` from Python."""
    return DetoxParser(CONFIGS, prog="detox-eval")


def parse(args: list[str] | None = None) -> tuple:
    """The parsed configs of a ``detox-eval`` command line, in ``evaluate``'s argument order."""
    return parser().parse(args)


def run_configs(*configs) -> dict:
    """``detox-eval`` from its parsed configs (``parse``'s, in order): returns the report dict."""
    setup_logging()
    return evaluate(*configs)


def run(args: list[str] | None = None) -> dict:
    """``detox-eval`` as a function (used by ``detox-ablate`` and ``detox-pipeline``): returns the report dict."""
    return run_configs(*parse(args))


def _main(args: list[str] | None) -> None:
    run(args)


def main(args: list[str] | None = None) -> int:
    """Entry point of ``detox-eval``; returns the exit code (2 with one line on stderr for user errors)."""
    return run_cli(_main, args)


if __name__ == "__main__":
    sys.exit(main())

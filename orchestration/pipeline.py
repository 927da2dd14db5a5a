"""``detox-pipeline``: the whole flow in one command, SFT -> PPO -> detox-eval, resumable.

    detox-pipeline --preset quick          # configs/pipeline/quick.yaml: ~10 minutes on a 2-core CPU
    detox-pipeline --preset full           # configs/pipeline/full.yaml: the default configs (README table)
    detox-pipeline --config my_preset.yaml --rerun ppo

Stages, in order, each in-process with its log in ``<output_root>/logs/<stage>.log``:

1. ``judges``: the toxicity classifiers the preset lists (``detox-train-toxicity`` into the detoxrl cache),
   trained only when missing;
2. ``sft``: ``sft/train.py`` with the preset's ``sft.config`` + ``common`` + ``sft.overrides``, into
   ``sft.output_dir`` (default ``<output_root>/sft``);
3. ``ppo``: ``rl/ppo.py`` with ``ppo.config`` + ``common`` + ``ppo.overrides``, starting from the SFT output
   (``model_name_or_path``), into ``ppo.output_dir`` (default ``<output_root>/ppo``);
4. ``eval``: one ``detox-eval`` call with ``eval.config`` scoring the baselines, the SFT model and the PPO
   model side by side into ``<output_root>/eval`` (``eval.json``, ``eval.md``, ``eval_sentences.tsv``),
   plus the PPO model decoded best-of-N (``ppo-best-of-N``) when the preset sets ``eval.best_of: N``;
   its table is printed at the end, without the sent/s column (timings differ from run to run; they are
   printed on a line of their own), so two runs of a seeded preset print the same table.

Seeds: ``common: {seed: S}`` gives every stage the same seed (SFT and PPO training, best-of-n sampling in
the evaluation); each stage seeds torch before it builds anything random (adapters, value head, samples).

Re-running reuses every stage whose saved ``resolved_config.yaml`` matches what this run would write and
whose inputs did not change (a retrained SFT model makes PPO and eval run again), and resumes an
interrupted SFT/PPO stage from its latest checkpoint (``orchestration/stage.py``). ``--rerun STAGE`` forces one.
``<output_root>/pipeline.json`` records what each stage did and how long it took.

Preset YAML::

    output_root: outputs/pipeline/quick
    common: {dataset: ..., lexicon_dir: ...}      # fields given to every stage that has them
    judges: [{name: detoxrl-toxicity-minilm, config: configs/rewards/train_toxicity.yaml, overrides: {}}]
    sft: {config: configs/sft/default.yaml, overrides: {max_steps: 40, ...}}   # output_dir: optional
    ppo: {config: configs/rl/default.yaml, overrides: {max_steps: 10, ...}}
    eval: {config: configs/eval/default.yaml, max_eval_sentences: 100, baselines: [duplicate, delete],
           best_of: 4, overrides: {}}          # best_of: optional, adds ppo-best-of-4
"""

from __future__ import annotations

import argparse
import logging
import os
import time

from detoxrl.config import DetoxParser, prog_name, resolved_config_dict, run_cli
from detoxrl.errors import ConfigError
from detoxrl.log import setup_logging
from detoxrl.paths import resolve_path
from detoxrl.runcard import CARD
from orchestration.stage import (RESERVED, RESOLVED, Stage, capture, check_keys, check_toxicity_models, comparable,
                                  config_file, dotted, fingerprint, mapping, read_yaml, write_json)

log = logging.getLogger("detoxrl")

STAGES = ("judges", "sft", "ppo", "eval")
TOP_KEYS = {"description", "output_root", "common", "judges", "sft", "ppo", "eval"}
STAGE_KEYS = {"config", "overrides", "output_dir"}
EVAL_KEYS = {"config", "overrides", "max_eval_sentences", "baselines", "best_of"}
JUDGE_KEYS = {"name", "config", "overrides"}
DEFAULT_CONFIGS = {"sft": "configs/sft/default.yaml", "ppo": "configs/rl/default.yaml",
                   "eval": "configs/eval/default.yaml", "judges": "configs/rewards/train_toxicity.yaml"}


def preset_path(preset: str | None, config: str | None) -> str:
    if config:
        if not os.path.isfile(config):
            raise ConfigError(f"{prog_name('detox-pipeline')}: config file '{config}' not found")
        return config
    found = resolve_path(os.path.join("configs", "pipeline", f"{preset}.yaml"))
    if not found:
        folder = resolve_path(os.path.join("configs", "pipeline"))
        names = sorted(f[:-5] for f in os.listdir(folder) if f.endswith(".yaml")) if folder else []
        raise ConfigError(f"{prog_name('detox-pipeline')}: "
                          f"no preset '{preset}' (presets: {', '.join(names) or 'none found'}); "
                          "or pass --config FILE")
    return found


class Pipeline:
    """A parsed preset: the configs of every stage, checked before anything runs."""

    def __init__(self, path: str, output_root: str | None = None):
        raw = read_yaml(path)
        where = f"{prog_name('detox-pipeline')}: {path}"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: must be a YAML mapping (output_root, sft, ppo, eval, ...)")
        check_keys(raw, TOP_KEYS, where)
        self.path = path
        self.description = str(raw.get("description") or "").strip()
        self.root = output_root or raw.get("output_root")
        if not self.root or not isinstance(self.root, str):
            raise ConfigError(f"{where}: output_root is missing")
        self.dirs = {s: os.path.join(self.root, s) for s in ("sft", "ppo", "eval")}
        common = mapping(raw.get("common"), f"{where}: common")

        from evaluation import evaluate
        from rl import ppo
        from sft import train as sft

        self.modules = {"sft": sft, "ppo": ppo, "eval": evaluate}
        known = {name: set(DetoxParser(mod.CONFIGS, prog=name)._known_fields()) for name, mod in self.modules.items()}
        unused = sorted(k for k in common if not any(k in fields for fields in known.values()))
        if unused:
            raise ConfigError(f"{where}: common: no stage has a field '{unused[0]}'")

        self.sections = {}
        for name in ("sft", "ppo", "eval"):
            section = mapping(raw.get(name), f"{where}: {name}")
            check_keys(section, EVAL_KEYS if name == "eval" else STAGE_KEYS, f"{where}: {name}")
            chosen = section.get("output_dir")  # sft/ppo may name it; --output_root puts every stage under it
            if chosen is not None and (not isinstance(chosen, str) or not chosen):
                raise ConfigError(f"{where}: {name}: output_dir must be a folder path")
            if chosen is not None and output_root is None:
                self.dirs[name] = chosen
            overrides = mapping(section.get("overrides"), f"{where}: {name}: overrides")
            reserved = RESERVED | ({"model_name_or_path"} if name == "ppo" else set()) | (
                {"systems"} if name == "eval" else set())
            bad = sorted(reserved & set(overrides))
            if bad:
                raise ConfigError(f"{where}: {name}: overrides: '{bad[0]}' is set by detox-pipeline")
            shared = {k: v for k, v in common.items() if k in known[name] and k not in reserved}
            self.sections[name] = {"config": config_file(section.get("config", DEFAULT_CONFIGS[name]),
                                                          f"{where}: {name}"),
                                   "overrides": {**shared, **overrides}, "raw": section}
        ev = self.sections["eval"]["raw"]
        baselines = ev.get("baselines", ["duplicate", "delete"])
        if not isinstance(baselines, list):
            raise ConfigError(f"{where}: eval: baselines must be a list such as [duplicate, delete]")
        self.baselines = [str(b) for b in baselines]
        self.best_of = ev.get("best_of")
        if self.best_of is not None and (isinstance(self.best_of, bool) or not isinstance(self.best_of, int)
                                         or self.best_of < 2):
            raise ConfigError(f"{where}: eval: best_of must be an integer >= 2 (the PPO model decoded best-of-N) "
                              "or null")
        self.max_eval_sentences = ev.get("max_eval_sentences")
        if self.max_eval_sentences is not None and (not isinstance(self.max_eval_sentences, int)
                                                    or self.max_eval_sentences < 1):
            raise ConfigError(f"{where}: eval: max_eval_sentences must be an integer >= 1 or null")
        self.judges = []
        for i, j in enumerate(raw.get("judges") or []):
            jw = f"{where}: judges[{i}]"
            if not isinstance(j, dict) or not j.get("name"):
                raise ConfigError(f"{jw} must be a mapping with a name (a detoxrl-toxicity-* classifier)")
            check_keys(j, JUDGE_KEYS, jw)
            self.judges.append({"name": str(j["name"]), "config": config_file(j.get("config",
                                                                                      DEFAULT_CONFIGS["judges"]), jw),
                                "overrides": mapping(j.get("overrides"), f"{jw}: overrides")})
        # Every stage's command line must parse now, not after an hour of training.
        for name in ("sft", "ppo", "eval"):
            try:
                self.parse(name)
            except ConfigError:
                raise
            except ValueError as exc:
                raise ConfigError(f"{where}: {name}: {exc}") from None

    def check_judges(self) -> None:
        """The reward's and the eval's toxicity classifiers exist (before any training, not after it)."""
        from detoxrl.errors import UserError

        try:
            check_toxicity_models(self.parse("ppo")[3], self.parse("eval")[1], "ppo: toxicity_model",
                                  "eval: judge_toxicity_model")
        except UserError as exc:
            raise UserError(f"{prog_name('detox-pipeline')}: "
                            f"{self.path}: {exc}; or list it under judges: in the preset "
                            "to train it as the first stage") from None

    # ------------------------------------------------------------------ the fields of each stage
    def values(self, name: str) -> dict:
        """The fields the pipeline sets on stage ``name`` over its config file: the preset's overrides, then the
        folders that chain the stages."""
        values = dict(dotted(self.sections[name]["overrides"]))
        if name == "ppo":
            values["model_name_or_path"] = self.dirs["sft"]
        if name == "eval":
            if self.max_eval_sentences is not None:
                values["max_eval_sentences"] = self.max_eval_sentences
            values["systems"] = [*self.baselines, f"sft={self.dirs['sft']}", f"ppo={self.dirs['ppo']}"]
            if self.best_of:
                values["systems"].append(f"ppo-best-of-{self.best_of}={self.dirs['ppo']}@best_of={self.best_of}")
        return {**values, "output_dir": self.dirs[name]}

    def parse(self, name: str, **extra) -> tuple:
        """Stage ``name``'s configs: its config file with ``values(name)`` (and ``extra``) on top."""
        return self.modules[name].parser().parse_mapping({**self.values(name), **extra}, self.sections[name]["config"])

    def stage(self, name: str) -> Stage:
        parsed = self.parse(name)
        expected = comparable(resolved_config_dict(*parsed))
        if name == "sft":
            model = parsed[2].model_name_or_path
            return Stage("sft", self.dirs["sft"], expected, {"base": fingerprint(resolve_path(model) or model)},
                         (RESOLVED, CARD, "README.md"))
        if name == "ppo":
            return Stage("ppo", self.dirs["ppo"], expected, {"sft": fingerprint(self.dirs["sft"])},
                         (RESOLVED, CARD))
        return Stage("eval", self.dirs["eval"], expected, {"sft": fingerprint(self.dirs["sft"]),
                                                           "ppo": fingerprint(self.dirs["ppo"])},
                     ("eval.json", "eval.md", RESOLVED), resumable=False)


# ------------------------------------------------------------------------------------------ running
def run_judges(p: Pipeline, force: bool) -> dict:
    from detoxrl.data import DataConfig
    from rewards import train_toxicity
    from rewards.toxicity.default import default_classifier_dir, is_trained

    done = []
    for j in p.judges:
        folder = default_classifier_dir(j["name"])
        if is_trained(folder) and not force:
            log.info("judges: %s present at %s", j["name"], folder)
            continue
        values = {**dotted(j["overrides"]), "output_dir": folder}
        with capture(os.path.join(p.root, "logs", "judges.log")):
            log.info("judges: training %s (detox-train-toxicity with %s over %s)", j["name"], values, j["config"])
            cfg, data_cfg = DetoxParser([train_toxicity.TrainToxicityConfig, DataConfig],
                                        prog="detox-train-toxicity").parse_mapping(values, j["config"])
            train_toxicity.run(cfg, data_cfg)
        done.append(j["name"])
    return {"action": "trained " + ", ".join(done) if done else "reused", "trained": done}


def run_stage(p: Pipeline, name: str, force: bool) -> dict:
    stage = p.stage(name)
    action, reason = stage.plan(force)
    log.info("%s: %s (%s)", name, {"reuse": "reused", "resume": "resuming", "fresh": "running"}[action], reason)
    if action == "reuse":
        return {"action": "reused", "reason": reason, "dir": stage.out_dir}
    stage.prepare(action)
    configs = p.parse(name, **({"resume_from_checkpoint": "latest"} if action == "resume" else {}))
    start = time.perf_counter()
    with capture(os.path.join(p.root, "logs", f"{name}.log")):
        log.info("detox-pipeline: %s: %s; %s with %s over %s", name, reason,
                 {"sft": "sft/train.py", "ppo": "rl/ppo.py", "eval": "detox-eval"}[name], p.values(name),
                 p.sections[name]["config"])
        p.modules[name].run_configs(*configs)
    return {"action": {"resume": "resumed", "fresh": "ran"}[action], "reason": reason, "dir": stage.out_dir,
            "minutes": round((time.perf_counter() - start) / 60, 2)}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=prog_name("detox-pipeline"), description="SFT -> PPO -> detox-eval in one command; "
                                 "re-run it to reuse finished stages and resume an interrupted one.")
    which = ap.add_mutually_exclusive_group()
    which.add_argument("--preset", default="quick",
                       help="quick | full (configs/pipeline/<preset>.yaml). Default quick.")
    which.add_argument("--config", help="A preset YAML of your own (see configs/pipeline/quick.yaml).")
    ap.add_argument("--output_root", help="Override the preset's output_root (every stage then writes under it).")
    ap.add_argument("--rerun", nargs="+", choices=STAGES, default=[],
                    help="Run these stages again even if finished (later stages follow, as their inputs change).")
    return ap


def run(args: list[str] | None = None) -> dict:
    """Run the pipeline; returns ``{"output_root", "stages": {name: {...}}, "table"}``."""
    setup_logging()
    ns = build_parser().parse_args(args)
    path = preset_path(ns.preset, ns.config)
    p = Pipeline(path, ns.output_root)
    log.info("detox-pipeline: %s -> %s", path, p.root)
    t0 = time.perf_counter()
    summary = {"preset": path, "output_root": p.root, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "stages": {}}
    summary_path = os.path.join(p.root, "pipeline.json")
    for name in STAGES:
        start = time.perf_counter()
        if name == "judges":
            result = run_judges(p, "judges" in ns.rerun)
            p.check_judges()
        else:
            result = run_stage(p, name, name in ns.rerun)
        result.setdefault("minutes", round((time.perf_counter() - start) / 60, 2))
        summary["stages"][name] = result
        write_json(summary_path, summary)
    summary["minutes"] = round((time.perf_counter() - t0) / 60, 2)
    table, speeds = _table(p.dirs["eval"])
    summary["table"] = table
    write_json(summary_path, summary)
    done = ", ".join(f"{k} {v['action']}" for k, v in summary["stages"].items())
    print(f"\ndetox-pipeline ({os.path.basename(path)}): {done}; {summary['minutes']:.1f} min.\n")
    print(table)
    if speeds:
        print(f"\nsentences/s (this run's timing, not part of the table): {speeds}")
    print(f"\nmodels: {p.dirs['sft']} (SFT), {p.dirs['ppo']} (PPO); report: {os.path.join(p.dirs['eval'], 'eval.md')}")
    return summary


def _table(eval_dir: str) -> tuple[str, str]:
    """The eval table without its timing column, and the timings as one line."""
    from detoxrl.errors import UserError
    from evaluation.report import COLUMNS, markdown_table, read_report

    try:
        systems = read_report(eval_dir)["systems"]
    except (UserError, KeyError):
        return "(no eval.json)", ""
    speeds = ", ".join(f"{name} {row['scores']['sent/s']:.1f}" for name, row in systems.items()
                       if isinstance(row.get("scores", {}).get("sent/s"), (int, float)))
    return markdown_table(systems, tuple(c for c in COLUMNS if c != "sent/s")), speeds


def main(args: list[str] | None = None) -> int:
    """Entry point of ``detox-pipeline``; exit code 2 with one line for user errors."""
    return run_cli(run, args)


if __name__ == "__main__":
    raise SystemExit(main())

"""``detox-ablate``: a grid of short PPO runs over reward variants, each scored by ``detox-eval``.

    detox-ablate --config configs/ablation/reward.yaml
    detox-ablate --config configs/ablation/smoke.yaml --only product weighted_sum --rerun weighted_sum

The grid config (YAML)::

    base_config: configs/rl/default.yaml   # the rl/ppo.py config every variant starts from
    output_dir: outputs/ablation/reward
    overrides: {max_steps: 40, ...}        # rl/ppo.py fields shared by every variant (budget, seed, ...)
    final_window: 5                        # training steps averaged for the train_* columns
    eval:
      config: configs/eval/default.yaml
      max_eval_sentences: 200              # null: the eval config's own value
      overrides: {}                        # any detox-eval field
      references: [start, duplicate]       # scored once beside the variants; start = the SFT model
    variants:
      - name: no_fluency
        overrides: {w_fluency: 0}          # rl/ppo.py fields; nested reward: {weights: ...} works too

Each variant is ``rl/ppo.py run()`` with ``--config <base_config> <overrides> <variant overrides>
--output_dir <output_dir>/runs/<name>``: same SFT start, seed, budget and prompts unless a variant
overrides them. Then one ``detox-eval`` call per variant scores ``runs/<name>`` on the dev split into
``runs/<name>/eval/``, so each result is cached with its run.

Re-running the same command resumes the grid (``orchestration/stage.py``): a variant whose final files, resolved
config and evaluation match is reused; an unfinished one resumes from its latest checkpoint; one whose
config (or start model) changed is moved to ``runs/<name>.previous`` and trained again. A variant that
fails (bad override, a judge that cannot load, a crash) is recorded with its error and the grid goes on.

Output in ``output_dir``: ``results.csv`` and ``results.md`` (one row per variant and reference:
status, the detox-eval metrics, the dev metrics after training, the training reward components
averaged over the last ``final_window`` steps), ``pareto.png`` (STA against SIM, point size FL,
labelled with J), ``runs/<name>/{train.log,eval.log,status.json}`` and ``references/``.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import time
from dataclasses import dataclass, field

from detoxrl.config import prog_name, resolved_config_dict, run_cli
from detoxrl.errors import ConfigError, UserError
from detoxrl.log import setup_logging
from detoxrl.paths import resolve_path
from detoxrl.runcard import CARD
from orchestration.ablation_report import write_results
from orchestration.stage import (RESERVED, RESOLVED, Stage, capture, check_keys, check_toxicity_models, comparable,
                                  config_file, dotted, fingerprint, mapping, one_line, read_yaml, write_json)

log = logging.getLogger("detoxrl")

TOP_KEYS = {"description", "base_config", "output_dir", "overrides", "final_window", "eval", "variants"}
EVAL_KEYS = {"config", "max_eval_sentences", "overrides", "references"}
VARIANT_KEYS = {"name", "overrides", "description"}
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


@dataclass
class Variant:
    name: str
    overrides: dict = field(default_factory=dict)
    description: str = ""


@dataclass
class AblationConfig:
    path: str
    base_config: str
    output_dir: str
    overrides: dict
    variants: list[Variant]
    eval_config: str
    max_eval_sentences: int | None = 200
    eval_overrides: dict = field(default_factory=dict)
    references: list[str] = field(default_factory=lambda: ["start"])
    final_window: int = 5
    description: str = ""


def load_config(path: str, output_dir: str | None = None) -> AblationConfig:
    """Read and check a grid config; every mistake is a one-line ``ConfigError`` naming the file and key."""
    if not os.path.isfile(path):
        raise ConfigError(f"{prog_name('detox-ablate')}: config file '{path}' not found")
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{prog_name('detox-ablate')}: "
                          f"{path}: must be a YAML mapping (base_config, output_dir, variants, ...)")
    where = f"{prog_name('detox-ablate')}: {path}"
    check_keys(raw, TOP_KEYS, where)
    ev = mapping(raw.get("eval"), f"{where}: eval")
    check_keys(ev, EVAL_KEYS, f"{where}: eval")
    overrides = mapping(raw.get("overrides"), f"{where}: overrides")
    bad = RESERVED & set(overrides)
    if bad:
        raise ConfigError(f"{where}: overrides: '{sorted(bad)[0]}' is set by detox-ablate (use the top-level "
                          "output_dir)")
    variants_raw = raw.get("variants")
    if not isinstance(variants_raw, list) or not variants_raw:
        raise ConfigError(f"{where}: variants must be a non-empty list of {{name, overrides}}")
    variants, seen = [], set()
    for i, item in enumerate(variants_raw):
        vw = f"{where}: variants[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{vw} must be a mapping with name and overrides")
        check_keys(item, VARIANT_KEYS, vw)
        name = str(item.get("name") or "")
        if not NAME.match(name) or name.endswith(".previous"):
            raise ConfigError(f"{vw}: name '{name}' must be letters, digits, '_', '-' or '.' (it names a folder)")
        if name in seen:
            raise ConfigError(f"{vw}: two variants are named '{name}'")
        seen.add(name)
        variants.append(Variant(name, mapping(item.get("overrides"), f"{vw}: overrides"),
                                str(item.get("description") or "")))
    refs = ev.get("references", ["start"])
    if refs is None:
        refs = []
    if not isinstance(refs, list) or not all(isinstance(r, str) and r for r in refs):
        raise ConfigError(f"{where}: eval: references must be a list such as [start, duplicate, delete]")
    clash = {r.partition("=")[0] for r in refs} & seen
    if clash:
        raise ConfigError(f"{where}: eval: reference '{sorted(clash)[0]}' has a variant's name; rename one")
    window = raw.get("final_window", 5)
    if not isinstance(window, int) or window < 1:
        raise ConfigError(f"{where}: final_window must be an integer >= 1 (got {window!r})")
    max_eval = ev.get("max_eval_sentences", 200)
    if max_eval is not None and (not isinstance(max_eval, int) or max_eval < 1):
        raise ConfigError(f"{where}: eval: max_eval_sentences must be an integer >= 1 or null (got {max_eval!r})")
    out = output_dir or raw.get("output_dir")
    if not out or not isinstance(out, str):
        raise ConfigError(f"{where}: output_dir is missing")
    return AblationConfig(
        path=path, base_config=config_file(raw.get("base_config"), f"{where}: base_config"), output_dir=out,
        overrides=overrides, variants=variants,
        eval_config=config_file(ev.get("config", "configs/eval/default.yaml"), f"{where}: eval: config"),
        max_eval_sentences=max_eval, eval_overrides=mapping(ev.get("overrides"), f"{where}: eval: overrides"),
        references=refs, final_window=window, description=str(raw.get("description") or "").strip())


# ------------------------------------------------------------------------------------------ stage fields
def ppo_values(cfg: AblationConfig, overrides: dict, out_dir: str) -> dict:
    """The fields a variant sets over ``base_config``: the grid's shared overrides, the variant's, its folder."""
    bad = RESERVED & set(overrides)
    if bad:
        raise ConfigError(f"override '{sorted(bad)[0]}' is set by detox-ablate itself; remove it")
    return {**dotted(cfg.overrides), **dotted(overrides), "output_dir": out_dir}


def eval_values(cfg: AblationConfig, systems: list[str], out_dir: str) -> dict:
    """The fields an evaluation sets over ``eval_config``."""
    values = dict(dotted(cfg.eval_overrides))
    if cfg.max_eval_sentences is not None:
        values["max_eval_sentences"] = cfg.max_eval_sentences
    return {**values, "systems": systems, "output_dir": out_dir}


# ------------------------------------------------------------------------------------------ running
class Grid:
    """One ``detox-ablate`` call: checks, then each selected variant trained (or reused) and evaluated."""

    def __init__(self, cfg: AblationConfig):
        self.cfg = cfg
        self.runs = os.path.join(cfg.output_dir, "runs")
        from rl import ppo
        from evaluation import evaluate

        self.ppo, self.evaluate = ppo, evaluate
        from detoxrl.config import DetoxParser

        self._known = set(DetoxParser(ppo.CONFIGS, prog="rl/ppo.py")._known_fields())
        self.check_keys(cfg.overrides, "overrides")
        # The grid's own settings must parse: a typo in the shared overrides stops everything, at once.
        base = self.parse_ppo({}, os.path.join(self.runs, "_check"))
        model = base[2].model_name_or_path
        self.start_model = resolve_path(model) or model
        self.start_fp = fingerprint(self.start_model)
        self._check_judges(base[3])

    def check_keys(self, overrides: dict, where: str) -> None:
        """Every override names an rl/ppo.py field (dotted reward aliases included), with a did-you-mean hint."""
        from detoxrl.config import did_you_mean

        for key in dotted(overrides):
            name = self.ppo.reward_alias(key)
            if name not in self._known:
                fix = did_you_mean(name, self._known, "see rl/ppo.py --help for the fields")
                raise ConfigError(f"{prog_name('detox-ablate')}: "
                                  f"{self.cfg.path}: {where}: unknown rl/ppo.py field '{key}'; {fix}")

    def judges(self):
        """The eval config's judges (``evaluation.evaluate``'s ``JudgeConfig``), as the grid's evaluations read it."""
        _, judges, *_ = self.parse_eval(["duplicate"], os.path.join(self.cfg.output_dir, "x"))
        return judges

    def parse_ppo(self, overrides: dict, out_dir: str, **extra) -> tuple:
        """A variant's ``rl/ppo.py`` configs: ``base_config`` with ``ppo_values`` (and ``extra``) on top."""
        try:
            values = {**ppo_values(self.cfg, overrides, out_dir), **extra}
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        return self.ppo.parser().parse_mapping(values, self.cfg.base_config)

    def parse_eval(self, systems: list[str], out_dir: str) -> tuple:
        return self.evaluate.parser().parse_mapping(eval_values(self.cfg, systems, out_dir), self.cfg.eval_config)

    def _check_judges(self, reward) -> None:
        """The eval config parses, and the toxicity classifiers of the base reward and of the eval exist
        (checked before any training, not after it)."""
        check_toxicity_models(reward, self.judges())

    def run_dir(self, name: str) -> str:
        return os.path.join(self.runs, name)

    # -------------------------------------------------------------------- one variant
    def run_variant(self, v: Variant, force: bool = False) -> dict:
        run_dir = self.run_dir(v.name)
        state = {"status": "failed", "action": "-", "error": "", "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        t0 = time.perf_counter()
        try:
            self.check_keys(v.overrides, f"variant {v.name}")
            parsed = self.parse_ppo(v.overrides, run_dir)
        except (UserError, ValueError) as exc:
            state["error"] = one_line(exc)
            log.error("variant %s: bad overrides: %s", v.name, state["error"])
            return self._finish(run_dir, state, t0)
        stage = Stage(f"variant {v.name}", run_dir, comparable(resolved_config_dict(*parsed)),
                      {"start": self.start_fp}, (RESOLVED, CARD))
        action, reason = stage.plan(force)
        log.info("variant %s: %s (%s)", v.name, {"reuse": "reused", "resume": "resuming", "fresh": "training"}[action],
                 reason)
        trained = action != "reuse"
        if trained:
            stage.prepare(action)
            with capture(os.path.join(run_dir, "train.log")) as captured:
                log.info("detox-ablate: variant %s: %s; rl/ppo.py with %s over %s", v.name, reason,
                         ppo_values(self.cfg, v.overrides, run_dir), self.cfg.base_config)
                try:
                    self.ppo.run_configs(*(self.parse_ppo(v.overrides, run_dir, resume_from_checkpoint="latest")
                                           if action == "resume" else parsed))
                except Exception as exc:  # noqa: BLE001 - recorded, the grid goes on
                    captured.traceback()
                    state["error"] = one_line(exc)
                    log.error("variant %s failed: %s (traceback in %s)", v.name, state["error"], captured.path)
                    return self._finish(run_dir, state, t0)
        state["action"] = {"reuse": "reused", "resume": "resumed", "fresh": "trained"}[action]
        ok, error, evaluated = self.evaluate_systems(f"eval {v.name}", [f"{v.name}={run_dir}"],
                                                     os.path.join(run_dir, "eval"), {"model": fingerprint(run_dir)},
                                                     os.path.join(run_dir, "eval.log"), force=trained)
        state["status"], state["error"] = ("ok", "") if ok else ("failed", error)
        state["evaluated"] = evaluated
        return self._finish(run_dir, state, t0)

    def evaluate_systems(self, name: str, systems: list[str], out_dir: str, inputs: dict, log_path: str,
                         force: bool = False) -> tuple[bool, str, bool]:
        """One detox-eval call, reused when its eval.json matches; ``(ok, error, ran)``."""
        try:
            parsed = self.parse_eval(systems, out_dir)
            stage = Stage(name, out_dir, comparable(resolved_config_dict(*parsed)), inputs,
                          ("eval.json", RESOLVED), resumable=False)
        except (UserError, ValueError) as exc:
            return False, one_line(exc), False
        action, reason = stage.plan(force)
        if action == "reuse":
            log.info("%s: reused (%s)", name, reason)
            return True, "", False
        stage.prepare(action)
        with capture(log_path) as captured:
            log.info("detox-ablate: %s: %s; detox-eval with %s over %s", name, reason,
                     eval_values(self.cfg, systems, out_dir), self.cfg.eval_config)
            try:
                self.evaluate.run_configs(*parsed)
            except Exception as exc:  # noqa: BLE001 - recorded, the grid goes on
                captured.traceback()
                log.error("%s failed: %s (traceback in %s)", name, one_line(exc), captured.path)
                return False, "eval: " + one_line(exc), True
        return True, "", True

    def reference_systems(self) -> list[str]:
        return [f"start={self.start_model}" if r == "start" else r for r in self.cfg.references]

    def reference_names(self) -> list[str]:
        from evaluation.systems import parse_system

        names = []
        for spec in self.reference_systems():
            try:
                names.append(parse_system(spec).name)
            except UserError:
                names.append(spec.partition("=")[0])
        return names

    def run_references(self, force: bool = False) -> tuple[bool, str]:
        if not self.cfg.references:
            return True, ""
        systems = self.reference_systems()
        out = os.path.join(self.cfg.output_dir, "references")
        ok, error, _ = self.evaluate_systems("eval references", systems, out, {"start": self.start_fp},
                                             os.path.join(out, "eval.log"), force)
        return ok, error

    @staticmethod
    def _finish(run_dir: str, state: dict, t0: float) -> dict:
        state["seconds"] = round(time.perf_counter() - t0, 1)
        if os.path.isdir(run_dir) or state["status"] == "failed":
            write_json(os.path.join(run_dir, "status.json"), state)
        return state


# ------------------------------------------------------------------------------------------ entry point
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog_name("detox-ablate"), description="Reward ablation: short PPO runs, one detox-eval "
                                "each, results.csv/results.md/pareto.png. Re-run the same command to resume.")
    p.add_argument("--config", required=True, help="Grid config (configs/ablation/reward.yaml, smoke.yaml).")
    p.add_argument("--output_dir", help="Override the config's output_dir.")
    p.add_argument("--only", nargs="+", metavar="NAME", help="Run only these variants (results list all).")
    p.add_argument("--rerun", nargs="+", metavar="NAME",
                   help="Train and evaluate these variants again even if finished ('all' for every one).")
    p.add_argument("--no_references", action="store_true", help="Skip the reference systems' evaluation.")
    return p


def run(args: list[str] | None = None) -> dict:
    """Run the grid; returns ``{"rows": [...], "csv": path, "md": path, "png": path}``."""
    setup_logging()
    ns = build_parser().parse_args(args)
    cfg = load_config(ns.config, ns.output_dir)
    names = [v.name for v in cfg.variants]
    for flag, chosen in (("--only", ns.only), ("--rerun", ns.rerun)):
        unknown = sorted(set(chosen or []) - set(names) - ({"all"} if flag == "--rerun" else set()))
        if unknown:
            raise ConfigError(f"{prog_name('detox-ablate')}: "
                              f"{flag}: no variant named '{unknown[0]}' (variants: {', '.join(names)})")
    rerun = set(names) if ns.rerun and "all" in ns.rerun else set(ns.rerun or [])
    grid = Grid(cfg)
    selected = [v for v in cfg.variants if not ns.only or v.name in ns.only]
    log.info("detox-ablate: %d variants (%s) -> %s", len(selected), ", ".join(v.name for v in selected),
             cfg.output_dir)
    start = time.perf_counter()
    states: dict[str, dict] = {}
    if not ns.no_references:
        ok, error = grid.run_references(force="all" in (ns.rerun or []))
        if not ok:
            log.error("reference systems failed: %s", error)
    result = write_results(grid, states)
    for v in selected:
        states[v.name] = grid.run_variant(v, force=v.name in rerun)
        result = write_results(grid, states)  # after every variant, so a long grid shows its progress
    failed = [n for n, s in states.items() if s["status"] != "ok"]
    log.info("detox-ablate: %d ok, %d failed%s in %.1f min; wrote %s, %s, %s", len(states) - len(failed),
             len(failed), f" ({', '.join(failed)})" if failed else "", (time.perf_counter() - start) / 60,
             result["csv"], result["md"], result["png"])
    return result


def main(args: list[str] | None = None) -> int:
    """Entry point of ``detox-ablate``; exit code 1 when a variant failed, 2 for a bad grid config."""
    code = 0

    def _run(a):
        nonlocal code
        result = run(a)
        code = 1 if any(r["status"] == "failed" for r in result["rows"]) else 0

    rc = run_cli(_run, args)
    return rc or code


if __name__ == "__main__":
    raise SystemExit(main())

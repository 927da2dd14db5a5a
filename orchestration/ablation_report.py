"""The ablation grid's report: ``results.csv``, ``results.md`` and ``pareto.png`` from the runs' files.

Everything is read back from the grid's folders (each variant's ``eval/eval.json``, run card, tensorboard
events and ``status.json``), so a report can be rewritten at any time without rerunning anything.
``grid`` is the ``orchestration.ablate.Grid`` being reported (its config, run folders and references).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os

from detoxrl.errors import UserError
from detoxrl.io import atomic_write_text
from detoxrl.runcard import has_card, read_card
from orchestration.stage import RESOLVED, dotted, one_line

log = logging.getLogger("detoxrl")

EVAL_COLUMNS = ("STA", "SIM", "FL", "J", "FL_LM", "J_LM", "ChrF", "ChrF++", "BLEU", "copy", "empty", "len_ratio", "sent/s")
TRAIN_TAGS = ("reward/total", "reward/mixed", "reward/penalty", "reward/toxicity", "reward/similarity",
              "reward/fluency", "reward/feedback", "reward/score", "rollout/copy_rate", "rollout/truncated", "ppo/kl")


def describe_overrides(overrides: dict) -> str:
    return " ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in dotted(overrides).items())


def train_tail(run_dir: str, window: int) -> dict[str, float]:
    """Mean of the last ``window`` logged training steps of each reward/rollout stat (tensorboard events)."""
    logdir = os.path.join(run_dir, "runs")
    if not os.path.isdir(logdir) or not any(f.startswith("events.") for f in os.listdir(logdir)):
        return {}
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        acc = EventAccumulator(logdir, size_guidance={"scalars": 0})
        acc.Reload()
        tags = set(acc.Tags().get("scalars", []))
        out = {}
        for tag in TRAIN_TAGS:
            if tag in tags:
                by_step = {e.step: e.value for e in acc.Scalars(tag)}  # a resumed run re-logs steps: last wins
                last = [by_step[s] for s in sorted(by_step)[-window:]]
                out["train_" + tag.replace("/", "_")] = sum(last) / len(last)
        return out
    except Exception as exc:  # noqa: BLE001 - a results column, never worth failing the grid
        log.warning("could not read the training log of %s: %s", run_dir, one_line(exc))
        return {}


def _eval_scores(eval_dir: str, system: str) -> dict:
    report = _read_json(os.path.join(eval_dir, "eval.json"))
    scores = ((report or {}).get("systems", {}).get(system) or {}).get("scores") or {}
    return {k: scores.get(k) for k in EVAL_COLUMNS if k in scores}


def _read_json(path: str) -> dict | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, json.JSONDecodeError):
        return None


def collect_rows(grid, states: dict[str, dict]) -> list[dict]:
    """One row per variant (this call's state, else what its folder holds) and per reference system."""
    cfg, rows = grid.cfg, []
    for v in cfg.variants:
        run_dir = grid.run_dir(v.name)
        state = states.get(v.name) or _read_json(os.path.join(run_dir, "status.json")) or {}
        finished = os.path.isfile(os.path.join(run_dir, RESOLVED)) and os.path.isfile(
            os.path.join(run_dir, "eval", "eval.json"))
        if v.name in states:  # run (or reused) by this call
            status = state["status"]
        else:  # left alone by this call (--only): what its folder says
            status = "ok" if finished else ("failed" if state.get("status") == "failed" else "pending")
        row = {"variant": v.name, "status": status, "action": state.get("action", "-") if v.name in states else "-",
               "overrides": describe_overrides(v.overrides), "error": state.get("error", "") if status == "failed"
               else ""}
        row.update(_eval_scores(os.path.join(run_dir, "eval"), v.name))
        try:
            card = read_card(run_dir) if has_card(run_dir) else {}
        except UserError:
            card = {}
        metrics = card.get("metrics") or {}
        row["steps"] = metrics.get("steps")
        row["train_minutes"] = metrics.get("train_minutes")
        for k, val in (metrics.get("after") or {}).items():
            row[f"after_{k}"] = val
        for k, val in (metrics.get("before") or {}).items():
            if k.startswith("reward_") or k in ("copy_rate", "lexicon_toxicity", "chrf"):
                row[f"before_{k}"] = val
        row.update(train_tail(run_dir, cfg.final_window))
        rows.append(row)
    if cfg.references:
        ref_dir = os.path.join(cfg.output_dir, "references")
        report = _read_json(os.path.join(ref_dir, "eval.json")) or {}
        for name in grid.reference_names():
            scores = _eval_scores(ref_dir, name)
            rows.append({"variant": name, "status": "reference" if scores else "pending", "action": "-",
                         "overrides": "start model " + grid.start_model if name == "start" else "",
                         "error": "" if scores or not report else "missing from references/eval.json", **scores})
    return rows


BASE_COLUMNS = ("variant", "status", "action", "overrides", *EVAL_COLUMNS, "steps", "train_minutes")


def write_csv(rows: list[dict], path: str) -> None:
    extra = sorted({k for r in rows for k in r} - set(BASE_COLUMNS) - {"error"})
    columns = [*BASE_COLUMNS, *extra, "error"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _csv_cell(r.get(k)) for k in columns})
    atomic_write_text(path, buf.getvalue())


def _csv_cell(v):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def _md(v, digits: int = 3) -> str:
    if v is None or v == "" or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v).replace("|", "\\|").replace("\n", " ")


MD_COLUMNS = [("variant", "variant"), ("status", "status"), ("overrides", "overrides"), ("J", "J"), ("STA", "STA"),
              ("SIM", "SIM"), ("FL", "FL"), ("J_LM", "J_LM"), ("ChrF", "ChrF"), ("copy", "copy"),
              ("after_reward_total", "dev reward"), ("after_reward_toxicity", "dev P(toxic)"),
              ("after_reward_similarity", "dev sim"), ("after_reward_fluency", "dev fl"),
              ("train_reward_total", "train reward"), ("train_ppo_kl", "train KL"), ("steps", "steps"),
              ("train_minutes", "train min")]


def _judge_lines(grid) -> list[str]:
    """``Judges:`` and one line per column judge of the grid's eval config (empty if it does not parse)."""
    try:
        judges = grid.judges()
    except Exception:  # noqa: BLE001 - the table matters more than this note
        return []
    return ["Judges:", "", *(f"- {k}: {v}" for k, v in judges.describe().items()), ""]


def write_markdown(grid, rows: list[dict], path: str, plot_note: str) -> None:
    cfg = grid.cfg
    lines = [f"# Reward ablation: {os.path.basename(cfg.path)}", ""]
    if cfg.description:
        lines += [cfg.description, ""]
    lines += [f"Every variant: `rl/ppo.py --config {cfg.base_config}` + `{describe_overrides(cfg.overrides)}` + its "
              f"overrides, from `{grid.start_model}`. Scored by `detox-eval --config {cfg.eval_config}` "
              f"(max_eval_sentences {cfg.max_eval_sentences}).", "", *_judge_lines(grid),
              "| " + " | ".join(h for _, h in MD_COLUMNS) + " |", "|---|---|---|" + "---:|" * (len(MD_COLUMNS) - 3)]
    for r in rows:
        lines.append("| " + " | ".join(_md(r.get(k)) for k, _ in MD_COLUMNS) + " |")
    failed = [r for r in rows if r["status"] == "failed"]
    if failed:
        lines += ["", "Failed:", ""]
        for r in failed:
            logs = [f"`runs/{r['variant']}/{n}`" for n in ("train.log", "eval.log")
                    if os.path.isfile(os.path.join(grid.run_dir(r["variant"]), n))]
            lines.append(f"- `{r['variant']}`: {r['error']}" + (f" (log: {', '.join(logs)})" if logs else ""))
    lines += ["", "Columns: STA, SIM, FL (sentence ChrF vs the references), J, J_LM (with the LM fluency, by default "
              "the reward's own), ChrF, copy are detox-eval's (see its eval.md), on the same dev "
              "sentences for every row. `dev reward`, `dev P(toxic)`, `dev sim`, `dev fl`: the run's own reward and "
              "its components on its greedy dev sample after training (each variant's OWN reward, so not comparable "
              "across reward forms). `train reward`, `train KL`: mean over the last "
              f"{cfg.final_window} training steps (tensorboard). results.csv holds every column, `before_*` included.",
              "", plot_note, ""]
    atomic_write_text(path, "\n".join(lines))


def plot_pareto(rows: list[dict], path: str, title: str) -> str:
    """``pareto.png``: STA against SIM, size by FL, each point labelled with its name and J. Returns a note."""
    points = [r for r in rows if r["status"] in ("ok", "reference") and all(
        isinstance(r.get(k), (int, float)) and not math.isnan(r[k]) for k in ("STA", "SIM", "FL", "J"))]
    if not points:
        return "pareto.png: not drawn (no scored row yet)."
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return "pareto.png: not drawn (matplotlib is not installed: pip install 'matplotlib>=3.8')."

    def size(fl: float) -> float:
        return 30 + 570 * max(0.0, min(1.0, fl)) ** 2

    fig = Figure(figsize=(8, 6), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    styles = {"ok": ("tab:blue", "o", "variants"), "reference": ("tab:gray", "D", "references")}
    for kind, (color, marker, label) in styles.items():
        sel = [p for p in points if p["status"] == kind]
        if sel:
            ax.scatter([p["SIM"] for p in sel], [p["STA"] for p in sel], s=[size(p["FL"]) for p in sel], c=color,
                       marker=marker, alpha=0.6, edgecolors="black", linewidths=0.5)
            ax.scatter([], [], s=60, c=color, marker=marker, alpha=0.6, edgecolors="black", label=label)
    # One label per position (points that coincide share it); neighbours get staggered offsets.
    groups: dict[tuple, list[dict]] = {}
    for p in points:
        groups.setdefault((round(p["SIM"], 3), round(p["STA"], 3)), []).append(p)
    offsets = [(8, 6), (8, -14), (-8, 6), (-8, -14)]
    for i, ((sim, sta), members) in enumerate(sorted(groups.items())):
        text = "\n".join(f"{p['variant']} J={p['J']:.3f}" for p in members)
        dx, dy = offsets[i % len(offsets)]
        ax.annotate(text, (sim, sta), xytext=(dx, dy), textcoords="offset points", fontsize=7,
                    ha="left" if dx > 0 else "right", va="bottom" if dy > 0 else "top")
    front, best = [], -math.inf  # non-dominated in (SIM, STA): walk by SIM descending
    for p in sorted(points, key=lambda p: (-p["SIM"], -p["STA"])):
        if p["STA"] > best:
            front.append(p)
            best = p["STA"]
    if len(front) > 1:
        ax.plot([p["SIM"] for p in front], [p["STA"] for p in front], "--", color="tab:red", lw=1,
                label="Pareto front")
    for fl in (0.5, 0.75, 1.0):
        ax.scatter([], [], s=size(fl), c="white", edgecolors="black", label=f"FL {fl}")
    ax.set_xlabel("SIM (similarity to the source)")
    ax.set_ylabel("STA (1 - toxicity)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best", labelspacing=1.2, borderpad=0.8)
    ax.margins(0.15)
    fig.tight_layout()
    tmp = path + ".tmp"
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
    return "pareto.png: STA against SIM, marker area grows with FL, each point labelled with its J."


def write_results(grid, states: dict[str, dict]) -> dict[str, str]:
    out = grid.cfg.output_dir
    os.makedirs(out, exist_ok=True)
    rows = collect_rows(grid, states)
    paths = {"csv": os.path.join(out, "results.csv"), "md": os.path.join(out, "results.md"),
             "png": os.path.join(out, "pareto.png")}
    write_csv(rows, paths["csv"])
    try:
        note = plot_pareto(rows, paths["png"], f"{os.path.basename(grid.cfg.path)}: STA vs SIM (size: FL)")
    except Exception as exc:  # noqa: BLE001 - the table matters more than the picture
        log.warning("pareto.png not drawn: %s", one_line(exc))
        note = f"pareto.png: not drawn ({one_line(exc)})."
    write_markdown(grid, rows, paths["md"], note)
    return {**paths, "rows": rows}



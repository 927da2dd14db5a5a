"""``detox-eval`` outputs: per-system scores, the JSON report, the markdown table, the per-sentence TSV.

``system_scores`` defines every reported number (all means are over the test sentences):

=============  =====================================================================================
STA            mean of 1 - toxicity(output)                      (evaluation judges, not the reward's)
SIM            mean of similarity(source, output)                (default encoder: all-mpnet-base-v2)
FL             mean of ChrF_i: sentence ChrF(output, its references) / 100 (TextDetox 2024's FL)
J              mean of STA_i * SIM_i * FL_i                      (the headline; NaN without references)
FL_LM          mean of the LM fluency(output)                    (by default the REWARD's own fluency LM)
J_LM           mean of STA_i * SIM_i * FL_LM_i                   (same STA and SIM; not independent)
ChrF, ChrF++   sacrebleu corpus chrF / chrF++ against all references of each sentence, / 100
BLEU           sacrebleu corpus BLEU against all references, / 100
copy           share of outputs equal to their source after ``norm_key`` normalisation
empty          share of outputs with no word character
len_ratio      total output characters / total source characters
sent/s         sentences produced per second (generation only; none for a predictions file)
=============  =====================================================================================
"""

from __future__ import annotations

import csv
import io
import json
import math
import os

from detoxrl.io import atomic_write_text
from detoxrl.metrics import bleu, chrf, chrf_pp, copy_rate, empty_rate, joint, length_ratio, mean
from rewards.checks import copy_flags, empty_flags

COLUMNS = ("STA", "SIM", "FL", "J", "FL_LM", "J_LM", "ChrF", "ChrF++", "BLEU", "copy", "empty", "len_ratio", "sent/s")


def system_scores(sources: list[str], outputs: list[str], references: list[list[str]], judged: dict[str, list[float]],
                  seconds: float | None) -> dict[str, float | None]:
    """Every number of one system's row (see the module docstring)."""
    has_refs = any(references)
    return {
        "STA": mean(judged["STA"]), "SIM": mean(judged["SIM"]),
        "FL": mean(judged["FL"]) if has_refs else math.nan,
        "J": joint(judged["STA"], judged["SIM"], judged["FL"]) if has_refs else math.nan,
        "FL_LM": mean(judged["FL_LM"]), "J_LM": joint(judged["STA"], judged["SIM"], judged["FL_LM"]),
        "ChrF": chrf(outputs, references) if has_refs else math.nan,
        "ChrF++": chrf_pp(outputs, references) if has_refs else math.nan,
        "BLEU": bleu(outputs, references) if has_refs else math.nan,
        "copy": copy_rate(sources, outputs), "empty": empty_rate(outputs),
        "len_ratio": length_ratio(sources, outputs),
        "sent/s": (len(outputs) / seconds if seconds else math.inf) if seconds is not None else None,
    }


JUDGE_NOTE = ("J is the headline: STA x SIM x FL with FL = sentence ChrF against the human references. FL_LM and "
              "J_LM use the LM fluency judge, by default the reward's own SmolLM2: a policy can learn it, so they are "
              "not independent.")


def _cell(name: str, value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if name == "sent/s":
        return "inf" if math.isinf(value) else (f"{value:,.0f}" if value >= 1000 else f"{value:.1f}")
    return f"{value:.3f}"


def markdown_table(results: dict[str, dict], columns: tuple[str, ...] = COLUMNS) -> str:
    """One row per system, ``columns`` (default ``COLUMNS``)."""
    lines = ["| system | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for name, row in results.items():
        lines.append(f"| {name} | " + " | ".join(_cell(c, row["scores"].get(c)) for c in columns) + " |")
    return "\n".join(lines)


def sentences_tsv(rows: list[dict]) -> str:
    """Per-sentence rows: system, index, source, output, STA, SIM, FL (ChrF), J, FL_LM, J_LM, copy, empty,
    references (``|||``)."""
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="\t", lineterminator="\n")
    header = ["system", "index", "source", "output", "STA", "SIM", "FL", "J", "FL_LM", "J_LM", "copy", "empty",
              "references"]
    writer.writerow(header)
    for r in rows:
        writer.writerow([r[h] if not isinstance(r[h], float) else f"{r[h]:.4f}" for h in header])
    return buf.getvalue()


def sentence_rows(system: str, sources, outputs, references, judged) -> list[dict]:
    copies, empties = copy_flags(sources, outputs), empty_flags(outputs)
    sta, sim = judged["STA"], judged["SIM"]
    return [{"system": system, "index": i, "source": s, "output": o, "STA": sta[i], "SIM": sim[i],
             "FL": judged["FL"][i], "J": sta[i] * sim[i] * judged["FL"][i],
             "FL_LM": judged["FL_LM"][i], "J_LM": sta[i] * sim[i] * judged["FL_LM"][i],
             "copy": int(copies[i]), "empty": int(empties[i]), "references": " ||| ".join(references[i])}
            for i, (s, o) in enumerate(zip(sources, outputs))]


def _json_safe(value):
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None if math.isnan(value) else "inf"
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


REPORT = "eval.json"


def read_report(output_dir: str) -> dict:
    """The ``eval.json`` that ``detox-eval`` wrote into ``output_dir`` (the one place that names it); a missing or
    broken file is a one-line ``UserError``."""
    from detoxrl.errors import UserError

    path = os.path.join(output_dir, REPORT)
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError:
        raise UserError(f"{path} not found: run detox-eval with --output_dir {output_dir} first") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: cannot read it ({exc})") from None


def write_reports(output_dir: str, report: dict, rows: list[dict]) -> dict[str, str]:
    """Write ``eval.json``, ``eval.md`` and ``eval_sentences.tsv`` atomically; returns their paths."""
    paths = {k: os.path.join(output_dir, f) for k, f in
             (("json", REPORT), ("markdown", "eval.md"), ("tsv", "eval_sentences.tsv"))}
    atomic_write_text(paths["json"], json.dumps(_json_safe(report), indent=2, ensure_ascii=False) + "\n")
    judges = "\n".join(f"- {k}: {v}" for k, v in report["judges"].items())
    test = report["test_set"]
    warnings = "".join(f"\n- WARNING: {w}" for w in report.get("warnings", []))
    md = (f"# detox-eval\n\nTest set: {test['source']} ({test['split']} split), {test['sentences']} sentences, "
          f"{test['references']} references.\n\nJudges:\n{judges}{warnings}\n\n{markdown_table(report['systems'])}\n"
          f"\n{JUDGE_NOTE}\n")
    atomic_write_text(paths["markdown"], md)
    atomic_write_text(paths["tsv"], sentences_tsv(rows))
    return paths

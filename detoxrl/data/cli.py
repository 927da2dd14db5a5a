"""``detox-data``: export any supported source as instruction JSON/JSONL, or preview what would be loaded.

    detox-data export --config configs/data/paradetox.yaml --output out.jsonl [--split train|dev|all]
    detox-data preview --config configs/data/paradetox.yaml [--samples 5]

Every ``DataConfig`` field can be given in the YAML or as a flag (the flag wins).
"""

from __future__ import annotations

import random
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

from detoxrl.config import DetoxParser, prog_name, run_cli
from detoxrl.validate import check_output_file
from detoxrl.data import DEFAULT_INSTRUCTION, DataConfig, DetoxData, load_detox_data, write_instruction_json
from detoxrl.errors import UserError

USAGE = "usage: detox-data {export,preview} --config FILE.yaml [flags]   (detox-data COMMAND --help for flags)"


@dataclass
class ExportArgs:
    """Options of ``detox-data export``."""

    output: str | None = field(
        default=None, metadata={"help": "Where to write: .jsonl (one record per line) or .json (a list). Required."}
    )
    split: Literal["train", "dev", "all"] = field(
        default="all", metadata={"help": "Which pairs to write: train, dev, or all (train + dev)."}
    )
    instruction: str = field(default=DEFAULT_INSTRUCTION, metadata={"help": "The 'instructions' text of every record."})


@dataclass
class PreviewArgs:
    """Options of ``detox-data preview``."""

    samples: int = field(default=5, metadata={"help": "How many train pairs to print (chosen with the seed)."})


def _pairs_of(data: DetoxData, split: str):
    return {"train": data.train, "dev": data.dev, "all": data.train + data.dev}[split]


def export(cfg: DataConfig, args: ExportArgs) -> None:
    if not args.output:
        raise UserError(f"{prog_name('detox-data export')}: --output PATH is required (a .jsonl or .json file)")
    check_output_file(args.output, "--output")
    data = load_detox_data(cfg)
    pairs = _pairs_of(data, args.split)
    write_instruction_json(pairs, args.output, instruction=args.instruction)
    print(f"{data.clean_report.format()}\nwrote {len(pairs)} {args.split} pairs to {args.output}")


def preview(cfg: DataConfig, args: PreviewArgs) -> None:
    data = load_detox_data(cfg)
    langs = ", ".join(f"{k} {v}" for k, v in Counter(p.lang for p in data.all).most_common())
    n_train_groups, n_dev_groups = len({p.group for p in data.train}), len({p.group for p in data.dev})
    print(f"source: {data.source} ({data.format})")
    print(f"raw: {data.clean_report.loaded} pairs from {data.raw_sources} source sentences")
    print(f"cleaning: {data.clean_report.format()}")
    subsampled = data.train_before_subsample > len(data.train)
    print(f"train: {len(data.train)} pairs ({n_train_groups} sources)"
          + (f", subsampled from {data.train_before_subsample}" if subsampled else ""))
    print(f"dev: {len(data.dev)} pairs ({n_dev_groups} sources)")
    print(f"languages: {langs}")
    rng = random.Random(cfg.split_seed)
    for pair in rng.sample(data.train, min(max(args.samples, 0), len(data.train))):
        print(f"\n[{pair.origin}]\n  toxic:   {pair.source}\n  neutral: {pair.target}")


COMMANDS = {"export": (ExportArgs, export), "preview": (PreviewArgs, preview)}


def _main(args: list[str] | None) -> None:
    args = list(sys.argv[1:] if args is None else args)
    if not args or args[0] in ("-h", "--help"):
        print(USAGE.replace("detox-data", prog_name("detox-data")))
        return
    command = args.pop(0)
    if command not in COMMANDS:
        raise UserError(f"{prog_name('detox-data')}: unknown command '{command}'; use export or preview ({USAGE})")
    options_type, run = COMMANDS[command]
    cfg, options = DetoxParser([DataConfig, options_type], prog=f"detox-data {command}").parse(args)
    run(cfg, options)


def main(args: list[str] | None = None) -> int:
    """Entry point of ``detox-data``; returns the exit code (2 with one line on stderr for user errors)."""
    return run_cli(_main, args)


if __name__ == "__main__":
    sys.exit(main())

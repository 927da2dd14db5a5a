"""Mutation score per module from the last ``mutmut run`` (``make mutate``): killed / all mutants, plus the
surviving mutants by name (``mutmut show NAME`` prints one). Read by hand into docs/mutation.md."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter, defaultdict

MODULES = ("rl.core", "rl.value_head", "rl.rollout", "sft.losses", "rewards.mixing", "rewards.composite")


def main() -> int:
    out = subprocess.run([sys.executable, "-m", "mutmut", "results", "--all", "true"], capture_output=True,
                         text=True, check=True).stdout
    counts: dict[str, Counter] = defaultdict(Counter)
    survivors: dict[str, list[str]] = defaultdict(list)
    for line in out.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if not name:
            continue
        module = name.split("__mutmut")[0].rsplit(".", 1)[0]
        counts[module][status] += 1
        if status == "survived":
            survivors[module].append(name)
    print("| module | mutants | killed | survived | other | score |\n|---|---:|---:|---:|---:|---:|")
    for m in MODULES:
        c = counts.get(m, Counter())
        total = sum(c.values())
        other = total - c["killed"] - c["survived"]
        score = 100 * c["killed"] / total if total else float("nan")
        print(f"| {m} | {total} | {c['killed']} | {c['survived']} | {other} | {score:.1f}% |")
    for m in MODULES:
        for name in survivors.get(m, []):
            print("survived:", name)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

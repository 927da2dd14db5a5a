"""Preference pairs from the feedback store: what reviewers preferred over what, for DPO, ORPO and a pairwise reward.

A pair is ``(input, chosen, rejected)`` with the record ids it came from:

1. a ``reject`` with a correction: ``chosen`` = the correction, ``rejected`` = the model's output (the ready-made
   pair that KTO's unpaired labels drop);
2. for the same input, an accepted output (or a correction) against any other record's rejected output: other
   model versions' rewrites of the same text, or the same model's on another day.

Pairs are deduplicated on ``(input, chosen, rejected)``; a pair whose two texts are equal, or that contradicts
an earlier one (the same two texts the other way round), is dropped. ``model_versions`` counts the versions whose
rejected outputs the pairs hold: DPO and ORPO learn most from the current model's own mistakes
(on-policy), which ``FeedbackTrainConfig.collected_on`` selects.

``export_rows`` is TRL's standard preference format (``prompt``/``chosen``/``rejected`` strings); the
prompt is the raw input, and training applies the model's own prompt format (``detoxrl.prompts``). Written by hand
because the pairing rules are the store's, not a library's.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field


@dataclass(frozen=True)
class PreferencePair:
    input: str
    chosen: str
    rejected: str
    record_ids: tuple[int, ...]
    rejected_version: str


@dataclass
class PreferenceData:
    pairs: list[PreferencePair] = field(default_factory=list)
    from_corrections: int = 0  # rule 1
    across_records: int = 0  # rule 2
    dropped_contradictions: int = 0

    def counts(self) -> dict[str, int]:
        return {"preference_pairs": len(self.pairs), "from_corrections": self.from_corrections,
                "across_records": self.across_records, "dropped_contradictions": self.dropped_contradictions}

    @property
    def model_versions(self) -> list[str]:
        return sorted({p.rejected_version for p in self.pairs})


def preference_pairs(records) -> PreferenceData:
    """The pairs of ``records`` (``feedback.store.FeedbackRecord``), in the order the records came."""
    out = PreferenceData()
    seen: dict[tuple[str, str, str], None] = {}

    def add(inp: str, chosen: str, rejected: str, ids: tuple[int, ...], version: str, rule: int) -> None:
        if chosen == rejected or (inp, chosen, rejected) in seen:
            return
        if (inp, rejected, chosen) in seen:  # another record preferred the other way round
            out.dropped_contradictions += 1
            return
        seen[(inp, chosen, rejected)] = None
        out.pairs.append(PreferencePair(inp, chosen, rejected, ids, version))
        if rule == 1:
            out.from_corrections += 1
        else:
            out.across_records += 1

    good: dict[str, list] = defaultdict(list)  # input -> [(text, record id)] accepted outputs and corrections
    bad: dict[str, list] = defaultdict(list)  # input -> [(text, record id, model version)] rejected outputs
    for r in records:
        if r.verdict == "reject":
            if r.correction is not None:
                add(r.input, r.correction, r.output, (r.id,), r.model_version, 1)
            bad[r.input].append((r.output, r.id, r.model_version))
        if r.correction is not None:
            good[r.input].append((r.correction, r.id))
        elif r.verdict == "accept":
            good[r.input].append((r.output, r.id))
    for inp, chosen in good.items():
        for text, gid in chosen:
            for rejected, bid, version in bad.get(inp, ()):
                if gid != bid:
                    add(inp, text, rejected, (gid, bid), version, 2)
    return out


def export_rows(data: PreferenceData) -> list[dict]:
    """TRL's standard preference rows, plus where each pair came from."""
    return [{"prompt": p.input, "chosen": p.chosen, "rejected": p.rejected, "record_ids": list(p.record_ids),
             "rejected_version": p.rejected_version} for p in data.pairs]

"""The rollout sampler (rl/sampling.py) and per-row caps (rl/rollout.py) on tiny models: greedy decoding gives
transformers' ``generate`` tokens for mixed prompt lengths while rows finish at different steps; caps cut rows
and are counted; sampling follows softmax(top-k(logits / T)); the work counts are the hand-computed ones."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from detoxrl.packing import shared_prefix_length
from detoxrl.prompts import PromptConfig, PromptFormatter
from rl.rollout import generate_rollout, length_caps, response_mask_from_eos
from rl.sampling import sample

SOURCES = ["you are a stupid idiot and nobody likes you", "shut up", "what a great day to go outside with friends",
           "this is some bullshit", "the class starts at nine"]


def _load(tiny_dir, kind):
    path = tiny_dir(kind)
    model = AutoModelForCausalLM.from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    return model, tok, PromptFormatter(PromptConfig(), tok, "causal")


def _varied_eos(model, tok, batch):
    """One or two EOS ids picked from the free greedy output so that the rows end at the most different steps
    (random tiny models answer every prompt much alike)."""
    free = _plain_generate(model, tok, batch, [tok.eos_token_id], 10).tolist()

    def ends(eos):
        return [next((t + 1 for t, x in enumerate(r) if x in eos), 10) for r in free]

    tokens = sorted({x for r in free for x in r})
    best = max(([a, b] for a in tokens for b in tokens if a <= b), key=lambda e: len(set(ends(e))))
    return sorted({tok.eos_token_id, *best})


def _plain_generate(model, tok, batch, eos, n):
    with torch.no_grad():
        out = model.generate(**batch, do_sample=False, max_new_tokens=n, pad_token_id=tok.pad_token_id,
                             eos_token_id=eos)
    return out[:, batch["input_ids"].shape[1]:]


def _cut(row: list[int], eos: list[int], cap: int) -> list[int]:
    """The tokens of a generated row through its first EOS, at most ``cap``."""
    kept = []
    for t in row[:cap]:
        kept.append(t)
        if t in eos:
            break
    return kept


@pytest.mark.parametrize("kind", ["llama", "gpt2", "qwen2"])
@pytest.mark.parametrize("packed", [True, False])  # False: the prefill for attention that takes no 4D mask
def test_greedy_sampler_gives_generate_tokens(tiny_dir, kind, packed, monkeypatch):
    if not packed:
        monkeypatch.setattr("rl.sampling.packing_supported", lambda model: False)
    model, tok, fmt = _load(tiny_dir, kind)
    batch = fmt.encode_prompts(SOURCES)
    eos = _varied_eos(model, tok, batch)
    plain = _plain_generate(model, tok, batch, eos, 10)
    caps = torch.full((len(SOURCES),), 10)
    s = sample(model, batch["input_ids"], batch["attention_mask"], caps, eos, tok.pad_token_id, do_sample=False)
    got = [_cut(r, eos, 10) for r in s.response.tolist()]
    want = [_cut(r, eos, 10) for r in plain.tolist()]
    assert got == want
    lengths = [len(g) for g in got]
    assert len(set(lengths)) > 1  # rows ended at different steps, so finished rows left the batch
    assert s.response.shape[1] == max(lengths)
    # every row runs once per new token after the first (the prefill gives the first)
    assert s.decode_rows == sum(n - 1 for n in lengths) < len(SOURCES) * (max(lengths) - 1)
    rows = [r[m.bool()].tolist() for r, m in zip(batch["input_ids"], batch["attention_mask"])]
    L = shared_prefix_length(rows)
    own = [len(r) - L for r in rows]
    assert s.prefill_tokens == (L + sum(own) if packed else L + len(rows) * max(own))
    if kind == "llama":  # the chat template: its system message is the shared prefix
        assert L > 10


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_seeded_sampling_gives_generate_samples(tiny_dir, kind):
    """Same seed, same samples as ``generate(do_sample=True)`` (temperature 0.7, top-p 0.9): the sampler draws the
    whole batch's noise every step as generate's multinomial does, though it computes only running rows."""
    model, tok, fmt = _load(tiny_dir, kind)
    batch = fmt.encode_prompts(SOURCES)
    eos = sorted({tok.eos_token_id, *range(100, 160)})  # 15% of the vocabulary: sampled rows end at random steps
    kw = dict(do_sample=True, temperature=0.7, top_k=0, top_p=0.9)
    for seed in range(3):
        torch.manual_seed(seed)
        with torch.no_grad():
            plain = model.generate(**batch, **kw, max_new_tokens=10, pad_token_id=tok.pad_token_id, eos_token_id=eos)
        torch.manual_seed(seed)
        s = sample(model, batch["input_ids"], batch["attention_mask"], torch.full((5,), 10), eos, tok.pad_token_id, **kw)
        P = batch["input_ids"].shape[1]
        assert [_cut(r, eos, 10) for r in s.response.tolist()] == [_cut(r, eos, 10) for r in plain[:, P:].tolist()]
        assert s.decode_rows < 5 * (s.response.shape[1] - 1)  # rows did leave the batch


def test_per_row_caps_cut_rows_and_count_as_truncated(tiny_dir):
    model, tok, fmt = _load(tiny_dir, "llama")
    eos = [tok.eos_token_id]  # rarely emitted: rows run to their caps
    batch = fmt.encode_prompts(SOURCES)
    plain = _plain_generate(model, tok, batch, eos, 6).tolist()
    caps = torch.tensor([1, 3, 6, 2, 4])
    kw = dict(do_sample=False, max_new_tokens=6)
    fast = generate_rollout(model, fmt, SOURCES, kw, eos, caps)
    slow = generate_rollout(model, fmt, SOURCES, kw, eos, caps, fast=False)  # generate, then cut at the caps
    for ro in (fast, slow):
        for i, cap in enumerate(caps.tolist()):
            want = _cut(plain[i], eos, cap)
            n = int(ro.response_mask[i].sum())
            assert ro.response[i, :n].tolist() == want
            assert bool(ro.truncated[i]) == (want[-1] not in eos)
            assert bool(ro.capped[i]) == (bool(ro.truncated[i]) and cap < 6)
        assert ro.capped.any() and not ro.capped[2]  # row 2's cap is max_new_tokens: truncated, not capped
    assert fast.texts == slow.texts
    assert fast.work["decode_rows"] < slow.work["decode_rows"]  # generate decodes every row to the longest


def test_sampling_follows_temperature_and_top_k(tiny_dir):
    """First tokens of 4000 samples of one prompt against softmax(top-3(logits / 0.7)), by total variation."""
    model, tok, fmt = _load(tiny_dir, "llama")
    with torch.no_grad():  # a random tiny model's logits are nearly flat: sharpen them so temperature matters
        model.get_output_embeddings().weight.mul_(20.0)
    batch = fmt.encode_prompts(SOURCES[:1] * 4000)
    with torch.no_grad():
        logits = model(**{k: v[:1] for k, v in batch.items()}).logits[0, -1]

    def expected(temperature):
        top = (logits / temperature).topk(3)
        return torch.zeros_like(logits).index_put_((top.indices,), torch.softmax(top.values, -1))

    assert float((expected(0.7) - expected(1.0)).abs().sum()) / 2 > 0.08  # the temperature is visible (0.099)
    torch.manual_seed(0)
    s = sample(model, batch["input_ids"], batch["attention_mask"], torch.ones(4000, dtype=torch.long), [], 0,
               temperature=0.7, top_k=3)
    freq = torch.bincount(s.response[:, 0], minlength=logits.numel()).float() / 4000
    assert set(s.response[:, 0].tolist()) <= set(logits.topk(3).indices.tolist())
    assert float((freq - expected(0.7)).abs().sum()) / 2 < 0.03


def test_length_caps_and_capped_masks_by_hand():
    n = torch.tensor([3, 10, 0])
    assert length_caps(n, 12, 1.5, 2).tolist() == [math.ceil(4.5) + 2, 12, 2]
    assert length_caps(n, 12, None, 2).tolist() == [12, 12, 12]
    assert length_caps(torch.tensor([0]), 12, 0.5, 0).tolist() == [1]  # at least one token
    response = torch.tensor([[5, 7, 2, 0], [5, 2, 0, 0], [5, 7, 8, 9]])
    mask, truncated = response_mask_from_eos(response, [2], torch.tensor([2, 4, 3]))
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0]]
    assert truncated.tolist() == [True, False, True]  # row 0's EOS lies past its cap of 2


def test_trainer_caps_rows_from_source_length_and_logs_the_share(tiny_dir, tmp_path):
    """max_new_tokens_ratio 0.1, extra 0: a source of <= 10 tokens gets a cap of 1 new token (max_new_tokens 6), so
    every response is one token long and every row without an EOS there is truncated and capped."""
    from tests.rl_helpers import PROMPTS, make_trainer

    tr = make_trainer(tiny_dir("llama"), tmp_path, max_steps=1, max_new_tokens_ratio=0.1, max_new_tokens_extra=0)
    n = [len(x) for x in tr.policy.tokenizer(PROMPTS, add_special_tokens=False)["input_ids"]]
    assert max(n) <= 10 and tr.length_caps(PROMPTS).tolist() == [1] * len(PROMPTS)
    stats = tr.step()
    ro = tr._last_samples[0]
    assert ro.lengths.tolist() == [1.0] * len(ro.texts)
    ended = torch.tensor([int(r[0]) in tr.eos for r in ro.response])
    assert torch.equal(ro.capped.cpu(), ~ended) and torch.equal(ro.truncated.cpu(), ~ended)
    assert stats["rollout/capped"] == stats["rollout/truncated"] == pytest.approx(float((~ended).float().mean()))
    assert stats["work/decode_rows"] == 0  # one token each: the prefill gives it
    unset = make_trainer(tiny_dir("llama"), tmp_path / "unset", max_steps=1)
    assert unset.length_caps(PROMPTS).tolist() == [6] * len(PROMPTS)


@pytest.mark.parametrize("kw,message", [
    (dict(max_new_tokens_ratio=0.0), "max_new_tokens_ratio must be > 0"),
    (dict(max_new_tokens_ratio=1.5, algorithm="grpo"), "max_new_tokens_ratio: algorithm grpo"),
    (dict(max_new_tokens_extra=-1), "max_new_tokens_extra must be >= 0"),
    (dict(max_packed_tokens=0), "max_packed_tokens must be >= 1"),
])
def test_speed_options_are_checked(tmp_path, kw, message):
    from tests.rl_helpers import ppo_args

    with pytest.raises(ValueError, match=message):
        ppo_args(tmp_path, **kw)

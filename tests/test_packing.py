"""Packed scoring (detoxrl/packing.py): the layout and mask by hand, and on tiny models the same per-token and
per-sequence log-probs, values, entropies and gradients as the padded batch, for mixed prompt and response
lengths, split over several packed sequences, with sdpa and eager attention."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from detoxrl.packing import PAD, PREFIX, pack_rows, packing_supported, shared_prefix_length
from detoxrl.prompts import PromptConfig, PromptFormatter
from rl.value_head import PolicyWithValue

SOURCES = ["you are a stupid idiot and nobody likes you", "shut up", "what a day", "this is some bullshit , shut up"]
LENGTHS = [5, 1, 3, 2]  # valid response tokens per row


# ---- layout ----------------------------------------------------------------------------------------------------

def test_shared_prefix_length_keeps_a_token_of_each_row():
    assert shared_prefix_length([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert shared_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2  # identical rows: the last token stays their own
    assert shared_prefix_length([[5, 6, 7]]) == 2
    assert shared_prefix_length([[1, 2], [2, 2]]) == 0
    assert shared_prefix_length([[1], [1, 2]]) == 0
    assert shared_prefix_length([]) == 0


def test_pack_rows_layout_and_mask_by_hand():
    p = pack_rows([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3, 6, 7]])
    assert p.prefix_len == 2
    assert p.input_ids.tolist() == [[1, 2, 3, 4, 5, 3, 6, 7]]
    assert p.position_ids.tolist() == [[0, 1, 2, 3, 2, 2, 3, 4]]
    assert p.segment.tolist() == [[PREFIX, PREFIX, 0, 0, 1, 2, 2, 2]]
    assert p.group.tolist() == [0, 0, 0] and p.offset.tolist() == [2, 4, 5]
    # (row, position) -> column: prefix positions are shared, the rest lie in the row's own block
    assert p.columns(torch.tensor([1, 2, 0, 2]), torch.tensor([0, 3, 3, 4])).tolist() == [0, 6, 3, 7]
    allowed = p.attention_mask(torch.float32, "sdpa")[0, 0]
    expected = [[0, 1], [0, 1, 2], [0, 1, 2, 3], [0, 1, 4], [0, 1, 5], [0, 1, 5, 6], [0, 1, 5, 6, 7]]
    assert [allowed[q].nonzero().flatten().tolist() for q in range(1, 8)] == expected
    assert allowed[0].nonzero().flatten().tolist() == [0]
    additive = p.attention_mask(torch.float32, "eager")[0, 0]
    assert torch.equal(additive == 0, allowed) and float(additive.min()) == torch.finfo(torch.float32).min


def test_pack_rows_splits_by_max_tokens_and_pads_the_end():
    # prefix 2 repeated in each sequence; own tokens 2, 1, 4 with a budget of 6 - 2 = 4: rows 0+1, then row 2
    p = pack_rows([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3, 6, 7, 8]], max_tokens=6, pad_id=9)
    assert p.input_ids.tolist() == [[1, 2, 3, 4, 5, 9], [1, 2, 3, 6, 7, 8]]
    assert p.segment.tolist() == [[PREFIX, PREFIX, 0, 0, 1, PAD], [PREFIX, PREFIX, 2, 2, 2, 2]]
    assert p.group.tolist() == [0, 0, 1] and p.offset.tolist() == [2, 4, 2]
    allowed = p.attention_mask(torch.float32, "sdpa")
    assert allowed[0, 0, 5].nonzero().flatten().tolist() == [0, 1, 5]  # padding sees only the prefix and itself
    # a row longer than the budget still gets a sequence of its own
    assert pack_rows([[1, 2, 3], [1, 4, 5, 6, 7, 8]], max_tokens=3).group.tolist() == [0, 1]


def test_packing_supported_reads_the_attention_implementation(tiny_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_dir("llama"))
    assert packing_supported(model)  # sdpa by default
    assert not packing_supported(SimpleNamespace(config=SimpleNamespace(_attn_implementation="flash_attention_2")))
    assert not packing_supported(object())


# ---- equivalence with the padded batch ---------------------------------------------------------------------

def _batch(path, generator_seed=0):
    tok = AutoTokenizer.from_pretrained(path)
    fmt = PromptFormatter(PromptConfig(), tok, "causal")
    batch = fmt.encode_prompts(SOURCES)
    g = torch.Generator().manual_seed(generator_seed)
    T = max(LENGTHS)
    response = torch.randint(5, tok.vocab_size if hasattr(tok, "vocab_size") else 300, (len(SOURCES), T), generator=g)
    mask = (torch.arange(T) < torch.tensor(LENGTHS)[:, None]).float()
    response = torch.where(mask.bool(), response, torch.zeros_like(response))
    return batch["input_ids"], batch["attention_mask"], response, mask


def _pwv(model, pack, max_tokens=1024, critic=None):
    pwv = PolicyWithValue(model, "causal", critic=critic, pack=pack, max_packed_tokens=max_tokens)
    torch.manual_seed(0)
    torch.nn.init.normal_(pwv.value_head.summary.weight)  # a zero head would hide which hidden state feeds it
    torch.nn.init.normal_(pwv.value_head.summary.bias)
    return pwv


@pytest.mark.parametrize("kind,attn", [("llama", "sdpa"), ("llama", "eager"), ("gpt2", "sdpa"), ("qwen2", "sdpa")])
@pytest.mark.parametrize("max_tokens", [1024, 100])  # 100: the rows spread over 2-3 packed sequences
def test_packed_scoring_equals_padded_scoring(tiny_dir, kind, attn, max_tokens):
    model = AutoModelForCausalLM.from_pretrained(tiny_dir(kind), attn_implementation=attn).eval()
    q, qm, r, rm = _batch(tiny_dir(kind))
    rows = [q[i][qm[i].bool()].tolist() + r[i, :n].tolist() for i, n in enumerate(LENGTHS)]
    assert (int(pack_rows(rows, max_tokens).group.max()) > 0) == (max_tokens == 100)  # several packed sequences
    packed_pwv, padded_pwv = _pwv(model, True, max_tokens), _pwv(model, False)
    assert packed_pwv.scored_tokens(q, qm, r, rm) < padded_pwv.scored_tokens(q, qm, r, rm) == q.numel() + r.numel()
    with torch.no_grad():
        packed, padded = packed_pwv(q, qm, r, rm, temperature=0.7), padded_pwv(q, qm, r, rm, temperature=0.7)
        packed_ref = packed_pwv.logprobs(model, q, qm, r, rm, temperature=0.7)
    for name in ("logprobs", "values", "entropy"):
        a, b = getattr(packed, name), getattr(padded, name)
        torch.testing.assert_close(a, b, atol=2e-5, rtol=0)
        assert float(a[rm == 0].abs().max()) == 0.0  # nothing on padding
    torch.testing.assert_close(packed_ref, padded.logprobs, atol=2e-5, rtol=0)
    torch.testing.assert_close(packed.logprobs.sum(1), padded.logprobs.sum(1), atol=1e-4, rtol=0)  # per sequence


def test_packed_scoring_gives_the_padded_gradients_through_lora(tiny_dir):
    """The update's backward: the same LoRA and value-head gradients from a packed and a padded forward."""
    from peft import LoraConfig, get_peft_model

    q, qm, r, rm = _batch(tiny_dir("llama"))
    grads = []
    for pack in (True, False):
        torch.manual_seed(0)
        base = AutoModelForCausalLM.from_pretrained(tiny_dir("llama"))
        model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
        pwv = _pwv(model, pack)
        out = pwv(q, qm, r, rm, temperature=0.7)
        ((out.logprobs * torch.linspace(-1, 1, r.shape[1])).sum() + (out.values ** 2).sum()).backward()
        grads.append({n: p.grad.clone() for n, p in pwv.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys() and any("lora_A" in n for n in grads[0])
    for n in grads[0]:  # gradients reach ~1e3 here: compare relative to each tensor's norm
        a, b = grads[0][n], grads[1][n]
        assert float(b.norm()) > 0 and float((a - b).norm() / b.norm()) < 1e-5, n

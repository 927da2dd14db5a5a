"""Fast unit tests of rl/value_head.py and rl/rollout.py on tiny models, each against an independent computation:
a plain ``model(cat(prompt, response)).logits[:, P-1:P+T-1]`` (T5: ``labels=response``) for log-probs and values."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

from detoxrl.prompts import PromptConfig, PromptFormatter
from rl.rollout import Rollout, eos_ids, generate_rollout, response_mask_from_eos
from rl.value_head import ForwardOut, PolicyWithValue, ValueHead, lm_forward, shift_right

SOURCES = ["you are a stupid idiot and nobody likes you", "shut up"]
RESPONSE = torch.tensor([[7, 8, 9, 10], [11, 12, 0, 0]])
RMASK = torch.tensor([[1.0, 1, 1, 1], [1, 1, 0, 0]])


def _load(tiny_dir, kind):
    path = tiny_dir(kind)
    seq2seq = kind in ("t5", "bart")
    model = (AutoModelForSeq2SeqLM if seq2seq else AutoModelForCausalLM).from_pretrained(path).eval()
    tok = AutoTokenizer.from_pretrained(path)
    fmt = PromptFormatter(PromptConfig(), tok, "seq2seq" if seq2seq else "causal")
    return model, tok, fmt, ("seq2seq" if seq2seq else "causal")


def _plain(model, family, q, r):
    """The reference computation for one unpadded row: (logits (T, V), last hidden (T, H)) of the response."""
    if family == "seq2seq":
        out = model(input_ids=q, labels=r, output_hidden_states=True)
        return out.logits[0], out.decoder_hidden_states[-1][0]
    P, T = q.shape[1], r.shape[1]
    out = model(torch.cat([q, r], dim=1), output_hidden_states=True)
    return out.logits[0, P - 1:P + T - 1], out.hidden_states[-1][0, P - 1:P + T - 1]


# ---- value head ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["llama", "gpt2", "t5"])  # gpt2: absolute positions
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_padded_forward_equals_plain_forward_of_each_row(tiny_dir, kind, temperature):
    """Left-padded prompts + right-padded responses: each row's log-probs, entropies and values are those of
    a plain forward of that row alone, read at positions P-1 .. P+T-2 (T5: the decoder with labels=response)."""
    model, _, fmt, family = _load(tiny_dir, kind)
    torch.manual_seed(0)
    pwv = PolicyWithValue(model, family)
    # the head starts at zero (values 0 whatever the hidden state): give it weights so the values depend on
    # which hidden state feeds it, and a bias so the bias is checked too
    torch.nn.init.normal_(pwv.value_head.summary.weight)
    torch.nn.init.normal_(pwv.value_head.summary.bias)
    batch = fmt.encode_prompts(SOURCES)
    with torch.no_grad():
        out = pwv(batch["input_ids"], batch["attention_mask"], RESPONSE, RMASK, temperature=temperature)
        ref_lp = pwv.logprobs(model, batch["input_ids"], batch["attention_mask"], RESPONSE, RMASK,
                              temperature=temperature)
    assert out.logprobs.shape == out.values.shape == out.entropy.shape == RESPONSE.shape
    w, b = pwv.value_head.summary.weight[0], pwv.value_head.summary.bias[0]
    for row in range(2):
        q = batch["input_ids"][row][batch["attention_mask"][row].bool()][None]
        n = int(RMASK[row].sum())
        r = RESPONSE[row, :n][None]
        with torch.no_grad():
            logits, hidden = _plain(model, family, q, r)
        logp = torch.log_softmax(logits.float() / temperature, -1)
        lp = logp.gather(-1, r[0, :, None]).squeeze(-1)
        entropy = -(logp.exp() * logp).sum(-1)
        torch.testing.assert_close(out.logprobs[row, :n], lp, atol=1e-4, rtol=0)
        torch.testing.assert_close(ref_lp[row, :n], lp, atol=1e-4, rtol=0)
        torch.testing.assert_close(out.entropy[row, :n], entropy, atol=1e-4, rtol=0)
        torch.testing.assert_close(out.values[row, :n], hidden.float() @ w + b, atol=1e-4, rtol=0)


def test_separate_critic_values_come_from_the_critic_backbone(tiny_dir):
    from tests.tiny import build_tiny

    model, _, fmt, family = _load(tiny_dir, "llama")
    critic = AutoModelForCausalLM.from_pretrained(build_tiny("llama", str(tiny_dir("llama")) + "-critic", seed=1))
    pwv = PolicyWithValue(model, family, critic=critic.eval())
    torch.manual_seed(0)
    torch.nn.init.normal_(pwv.value_head.summary.weight)  # a zero head would give 0 from any backbone
    batch = fmt.encode_prompts(SOURCES[:1])
    r = RESPONSE[:1]
    with torch.no_grad():
        out = pwv(batch["input_ids"], batch["attention_mask"], r, torch.ones(1, 4))
        _, hidden = _plain(critic, family, batch["input_ids"], r)
        logits, _ = _plain(model, family, batch["input_ids"], r)
    w, b = pwv.value_head.summary.weight[0], pwv.value_head.summary.bias[0]
    torch.testing.assert_close(out.values[0], hidden @ w + b, atol=1e-4, rtol=0)
    torch.testing.assert_close(out.logprobs[0], torch.log_softmax(logits, -1).gather(-1, r[0, :, None])[:, 0],
                               atol=1e-4, rtol=0)
    assert pwv(batch["input_ids"], batch["attention_mask"], r, torch.ones(1, 4), with_values=False).values is None


@pytest.mark.parametrize("pack", [False, True])
def test_lm_forward_skips_what_is_not_wanted(tiny_dir, pack):
    """Only the 6 valid response tokens (4 + 2) come back, in row-major order, and only what was asked for."""
    model, _, fmt, family = _load(tiny_dir, "llama")
    batch = fmt.encode_prompts(SOURCES)
    args = (model, family, batch["input_ids"], batch["attention_mask"], RESPONSE, RMASK, None)
    states = lm_forward(*args, want_logits=False, pack=pack)
    assert states.logits is None and states.hidden.shape == (6, 64)
    assert states.rows.tolist() == [0, 0, 0, 0, 1, 1] and states.cols.tolist() == [0, 1, 2, 3, 0, 1]
    states = lm_forward(*args, want_hidden=False, pack=pack)
    assert states.hidden is None and states.logits.shape == (6, model.config.vocab_size)
    assert states.scatter(torch.arange(1.0, 7.0), (2, 4)).tolist() == [[1, 2, 3, 4], [5, 6, 0, 0]]
    t5, _, fmt5, _ = _load(tiny_dir, "t5")
    batch = fmt5.encode_prompts(SOURCES)
    args = (t5, "seq2seq", batch["input_ids"], batch["attention_mask"], RESPONSE, RMASK, 0)
    states = lm_forward(*args, want_logits=False, pack=pack)  # seq2seq is never packed
    assert states.logits is None and states.hidden.shape == (6, 64)
    states = lm_forward(*args, want_hidden=False, pack=pack)
    assert states.hidden is None and states.logits.shape[0] == 6


def test_value_head_is_w_dot_h_plus_b_and_shift_right():
    head = ValueHead(3)
    with torch.no_grad():
        head.summary.weight.copy_(torch.tensor([[1.0, -2.0, 0.5]]))
        head.summary.bias.fill_(0.25)
    h = torch.tensor([[[2.0, 1.0, 4.0], [0.0, 0.0, 0.0]]], dtype=torch.float64)
    assert head(h).tolist() == [[2.0 - 2.0 + 2.0 + 0.25, 0.25]]
    assert shift_right(torch.tensor([[5, 6, 7], [8, 9, 1]]), 0).tolist() == [[0, 5, 6], [0, 8, 9]]
    v = torch.ones(2, requires_grad=True)
    entropy = torch.zeros(2)
    d = ForwardOut(v * 2, v * 3, entropy).detached()
    assert not d.logprobs.requires_grad and not d.values.requires_grad and d.entropy is entropy
    assert ForwardOut(v, None, torch.zeros(2)).detached().values is None


# ---- rollouts ------------------------------------------------------------------------------------------------

def test_response_mask_keeps_tokens_through_the_first_eos():
    response = torch.tensor([[5, 7, 2, 0, 0], [5, 7, 8, 9, 4], [2, 2, 0, 0, 0], [5, 3, 6, 3, 9]])
    mask, truncated = response_mask_from_eos(response, eos=[2, 3])
    assert mask.dtype == torch.float32
    assert mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 0, 0, 0]]
    assert truncated.tolist() == [False, True, False, False]


def test_eos_ids_joins_generation_config_and_tokenizer(tiny_dir):
    model, tok, _, _ = _load(tiny_dir, "llama")
    model.generation_config.eos_token_id = [9, 4]
    assert eos_ids(model, tok) == sorted({9, 4, tok.eos_token_id})
    model.generation_config.eos_token_id = 7
    assert eos_ids(model, tok) == sorted({7, tok.eos_token_id})
    model.generation_config.eos_token_id = None
    assert eos_ids(model, tok) == [tok.eos_token_id]
    assert eos_ids(object(), tok) == [tok.eos_token_id]  # no generation config at all
    class NoEos:
        generation_config = object()
    assert eos_ids(NoEos(), tok) == [tok.eos_token_id]


@pytest.mark.parametrize("kind", ["llama", "t5"])
def test_generate_rollout_matches_plain_generate(tiny_dir, kind):
    """Greedy decoding: the rollout's response is the plain ``generate`` output past the prompt (causal) or past
    the decoder start (seq2seq), cut at the first EOS (padding after it), with its decoded text."""
    model, tok, fmt, family = _load(tiny_dir, kind)
    model.train()
    vocab_eos = [tok.convert_tokens_to_ids("Ġyou"), tok.convert_tokens_to_ids("Ġa")]  # frequent: EOS happens
    eos = sorted(set(vocab_eos + [tok.eos_token_id]))
    kw = dict(do_sample=False, max_new_tokens=6)
    ro = generate_rollout(model, fmt, SOURCES, kw, eos)
    assert isinstance(ro, Rollout) and model.training  # the train/eval mode is restored
    batch = fmt.encode_prompts(SOURCES)
    with torch.no_grad():
        plain = model.eval().generate(**batch, **kw, pad_token_id=tok.pad_token_id, eos_token_id=eos)
    plain = plain[:, batch["input_ids"].shape[1]:] if family == "causal" else plain[:, 1:]
    assert torch.equal(ro.query, batch["input_ids"]) and torch.equal(ro.query_mask, batch["attention_mask"])
    assert ro.response.shape == plain.shape and ro.sources == SOURCES
    for b in range(2):
        hits = [t for t in range(plain.shape[1]) if int(plain[b, t]) in eos]
        n = hits[0] + 1 if hits else plain.shape[1]
        assert ro.response[b, :n].tolist() == plain[b, :n].tolist()
        assert ro.response[b, n:].tolist() == [tok.pad_token_id] * (plain.shape[1] - n)
        assert ro.response_mask[b].tolist() == [1.0] * n + [0.0] * (plain.shape[1] - n)
        assert bool(ro.truncated[b]) == (not hits)
        assert ro.texts[b] == tok.decode(plain[b, :n], skip_special_tokens=True).strip()
    assert ro.lengths.tolist() == ro.response_mask.sum(1).tolist()
    idx = torch.tensor([1])
    assert [t.tolist() for t in ro.tensors(idx)] == [t[1:].tolist() for t in ro.tensors()]


def test_value_head_init_follows_its_docstring():
    """``w = 0``, ``b = 0``: every initial prediction is exactly 0, whatever the hidden states."""
    torch.manual_seed(0)
    head = ValueHead(4095)
    assert float(head.summary.weight.abs().max()) == 0.0 and float(head.summary.bias.abs().max()) == 0.0
    assert torch.equal(head(torch.randn(3, 5, 4095) * 10), torch.zeros(3, 5))

"""``rl/ppo.py`` end to end on tiny run folders: outputs, config aliases, bad input, GRPO/RLOO, 2 processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from detoxrl.errors import ConfigError, UserError
from rl.ppo import parse, run
from tests.rl_helpers import VALUE_HEAD_ARGV, make_run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _args(run_dir, data, out, *extra):
    tsv, lex = data
    return ["--model_name_or_path", run_dir, "--dataset", str(tsv), "--lexicon_dir", str(lex), "--lexicons", "ldnoobw",
            "--dev_size", "4", "--output_dir", str(out), "--use_cpu", "true", "--report_to", "none",
            "--toxicity_backend", "lexicon", "--w_similarity", "0", "--w_fluency", "0",
            "--finetuning", "lora", "--lora_r", "4", "--lora_alpha", "8", "--lora_target_modules", "all-linear",
            "--rollout_batch_size", "4", "--max_new_tokens", "4", "--max_steps", "2", "--save_steps", "1",
            "--eval_samples", "2", "--sample_every", "1", "--disable_tqdm", "true", *VALUE_HEAD_ARGV, *extra]


@pytest.mark.parametrize("kind,family", [("llama", "causal"), ("t5", "seq2seq")])
def test_ppo_writes_a_loadable_run_folder(tiny_dir, toy_data, tmp_path, kind, family):
    sft = make_run(tiny_dir(kind), tmp_path, family)
    out = tmp_path / "rl"
    summary = run(_args(sft, toy_data, out))
    assert summary["steps"] == 2 and set(summary["before"]) == set(summary["after"])
    assert {"copy_rate", "lexicon_toxicity", "chrf", "reward_total"} <= set(summary["after"])
    names = set(os.listdir(out))
    assert {"adapter", "merged", "value_head.safetensors", "detoxrl.json", "README.md", "resolved_config.yaml"} <= names
    card = json.loads((out / "detoxrl.json").read_text())
    assert card["stage"] == "ppo" and card["family"] == family and card["parent"] == sft
    assert card["generation"]["max_new_tokens"] == 8  # carried over from the SFT card
    assert "| reward_total |" in (out / "README.md").read_text()

    from evaluation.infer import Detoxifier

    det = Detoxifier.from_pretrained(str(out))
    assert isinstance(det("you are a stupid idiot"), str)
    if family == "causal":  # merged/ computes what base + the trained adapter compute
        import torch
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        ids = torch.tensor([[5, 17, 42, 9]])
        with torch.no_grad():
            want = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(os.path.join(sft, "merged")),
                                             str(out / "adapter"))(input_ids=ids).logits
            got = AutoModelForCausalLM.from_pretrained(out / "merged")(input_ids=ids).logits
            base = AutoModelForCausalLM.from_pretrained(os.path.join(sft, "merged"))(input_ids=ids).logits
        assert (want - base).abs().max() > 1e-5  # PPO moved the adapter
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_main_returns_0_and_writes_the_run_folder(tiny_dir, toy_data, tmp_path, capsys):
    from rl.ppo import main

    sft = make_run(tiny_dir("llama"), tmp_path, "causal")
    out = tmp_path / "m"
    assert main(_args(sft, toy_data, out, "--max_steps", "1", "--eval_samples", "0", "--sample_every", "0")) == 0
    assert (out / "merged" / "model.safetensors").exists() and json.loads((out / "detoxrl.json").read_text())
    assert main(_args(sft, toy_data, tmp_path / "bad", "--rollout_batch_size", "6", "--num_mini_batches", "4")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "rollout_batch_size 6 does not divide" in err[-1]


def test_reward_weights_take_dotted_and_nested_spellings(tmp_path, toy_data):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("reward:\n  weights:\n    toxicity: 2.5\n  form: weighted_sum\nmax_steps: 3\n")
    _, _, _, reward, ppo = parse(["--config", str(cfg), "--reward.weights.similarity", "0.5"])
    assert (reward.w_toxicity, reward.w_similarity, reward.form, ppo.max_steps) == (2.5, 0.5, "weighted_sum", 3)


def test_bad_input_gets_one_clear_line(tiny_dir, toy_data, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        run(_args(str(tmp_path / "no" / "such" / "run"), toy_data, tmp_path / "o"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="is not a model"):
        run(_args(str(empty), toy_data, tmp_path / "o"))
    with pytest.raises(ConfigError, match="rollout_batch_size 6 does not divide"):
        parse(["--rollout_batch_size", "6", "--num_mini_batches", "4"])
    sft = make_run(tiny_dir("llama"), tmp_path, "causal")
    with pytest.raises(UserError, match="reward component 'toxicity'.*w_toxicity: 0"):
        run(_args(sft, toy_data, tmp_path / "o", "--toxicity_backend", "hf", "--toxicity_model",
                  str(tmp_path / "no_classifier")))
    with pytest.raises(UserError, match="no checkpoint"):
        run(_args(sft, toy_data, tmp_path / "fresh", "--resume_from_checkpoint", "latest"))


@pytest.mark.parametrize("algorithm", ["grpo", "rloo"])
def test_trl_algorithms_train_with_our_reward(tiny_dir, toy_data, tmp_path, algorithm, monkeypatch):
    """The composite reward is called on every generated batch, and a reward that varies between the two
    generations of a prompt moves the adapter (lora_B starts at 0)."""
    import torch
    from safetensors.torch import load_file

    from rewards.composite import CompositeReward, RewardBreakdown

    calls = []

    def varying(self, sources, outputs):  # 'o' share plus a length term: never equal for two generations
        calls.append((list(sources), list(outputs)))
        score = torch.tensor([o.count("o") / max(len(o), 1) + len(o) / 100 for o in outputs]).clamp(0, 1)
        flags = torch.zeros(len(outputs), dtype=torch.bool)
        return RewardBreakdown(score, score, torch.zeros(len(outputs)), 1 - score, None, None, flags, flags, flags)

    monkeypatch.setattr(CompositeReward, "__call__", varying)
    sft = make_run(tiny_dir("llama"), tmp_path, "causal")
    out = tmp_path / algorithm
    summary = run(_args(sft, toy_data, out, "--algorithm", algorithm, "--num_generations", "2",
                        "--form", "weighted_sum", "--w_similarity", "0", "--learning_rate", "1e-2",
                        "--eval_samples", "0", "--ppo_epochs", "1"))
    assert summary["steps"] == 2
    train_calls = [c for c in calls if len(c[1]) == 4]
    assert len(train_calls) == len(calls) == 2  # one reward call per step (num_iterations = ppo_epochs = 1), on
    # 4 = 2 prompts x 2 generations
    for sources, _ in train_calls:
        assert sources[0] == sources[1] and sources[2] == sources[3]  # grouped generations of one prompt
    adapter = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    moved = [k for k, v in adapter.items() if "lora_B" in k and v.abs().max() > 0]
    assert moved, "no lora_B weight moved away from 0"
    card = json.loads((out / "detoxrl.json").read_text())
    assert card["stage"] == algorithm and os.path.isdir(out / "merged")


def test_trl_algorithms_refuse_seq2seq(tiny_dir, toy_data, tmp_path):
    sft = make_run(tiny_dir("t5"), tmp_path, "seq2seq")
    with pytest.raises(UserError, match="causal LMs only.*algorithm: ppo"):
        run(_args(sft, toy_data, tmp_path / "g", "--algorithm", "grpo", "--num_generations", "2"))


def test_component_rewards_sum_to_the_weighted_sum(tiny_dir):
    """TRL sums reward_weights x reward_funcs; with our weights that is our weighted_sum total."""
    import torch

    from rewards.composite import RewardBreakdown
    from rl.trl_algos import ComponentRewards

    class Fake:
        weights = {"toxicity": 3.0, "similarity": 1.0}

        class cfg:
            form = "weighted_sum"

        def __call__(self, sources, outputs):
            tox, sim = torch.tensor([0.2, 0.9]), torch.tensor([0.5, 1.0])
            mixed = (3 * (1 - tox) + 1 * sim) / 4
            pen = torch.tensor([0.0, 0.5])
            flags = torch.zeros(2, dtype=torch.bool)
            return RewardBreakdown(mixed - pen, mixed, pen, tox, sim, None, flags, flags, flags)

    funcs, weights = ComponentRewards(Fake(), truncation_penalty=0.25, eos=[2]).functions()
    assert [f.__name__ for f in funcs] == ["toxicity", "similarity", "penalties"] and weights == [0.75, 0.25, 1.0]
    kw = dict(prompts=["p", "p"], completions=["a", "b"], completion_ids=[[5, 2], [5, 6]], source=["x", "y"])
    total = [sum(w * f(**kw)[i] for f, w in zip(funcs, weights)) for i in range(2)]
    # row 0: (3*0.8 + 0.5)/4 = 0.725, ends with EOS. row 1: (3*0.1 + 1)/4 - 0.5 - 0.25 (no EOS) = -0.425
    assert total == pytest.approx([0.725, -0.425])


DDP_SCRIPT = """
import os, sys, torch
sys.path.insert(0, {root!r})
from rl import ppo
from rl.trainer import DetoxPPOTrainer

seen, sample, train = [], DetoxPPOTrainer.sample_sources, DetoxPPOTrainer.train

def recording_sample(self):
    sources = sample(self)
    seen.append(sources)
    return sources

def dumping_train(self, *a, **k):
    out = train(self, *a, **k)
    params = {{n: p.detach().clone() for n, p in self.unwrapped.named_parameters() if p.requires_grad}}
    os.makedirs(self.args.output_dir, exist_ok=True)
    torch.save({{"params": params, "sources": seen}},
               os.path.join(self.args.output_dir, "rank%d.pt" % self.accelerator.process_index))
    return out

DetoxPPOTrainer.sample_sources, DetoxPPOTrainer.train = recording_sample, dumping_train
sys.exit(ppo.main(sys.argv[1:]))
"""


def test_two_cpu_processes_under_torchrun_train_and_resume(tiny_dir, toy_data, tmp_path):
    """``detox-ppo``'s main under torchrun: each rank samples its own prompts, and the gradients are averaged,
    so every trainable parameter ends up bit-identical on both ranks (and moved from its start). A second pair of
    processes resumed from the first run's ``checkpoint-1`` (accelerate's ``save_state``) ends on the same weights."""
    import torch

    sft = make_run(tiny_dir("llama"), tmp_path, "causal")
    out = tmp_path / "ddp"
    script = tmp_path / "ddp_ppo.py"
    script.write_text(DDP_SCRIPT.format(root=ROOT))
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}

    def torchrun(out_dir, *extra):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29534",
               str(script), *_args(sft, toy_data, out_dir, "--learning_rate", "1e-2", *extra)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, cwd=ROOT)
        assert proc.returncode == 0, proc.stderr[-3000:]

    torchrun(out)
    state = json.loads((out / "checkpoint-1" / "trainer_state.json").read_text())
    assert state["step"] == 1
    r0, r1 = (torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert len(r0["sources"]) == len(r1["sources"]) == 2 and r0["sources"] != r1["sources"]
    assert r0["params"].keys() == r1["params"].keys() and r0["params"]
    for name in r0["params"]:
        assert torch.equal(r0["params"][name], r1["params"][name]), name
    moved = [n for n, p in r0["params"].items() if "lora_B" in n and p.abs().max() > 0]
    assert moved  # lora_B starts at 0: training happened
    assert "2 x 8 rollouts" in (out / "README.md").read_text()  # the card counts both ranks: 2 processes x 4

    resumed = tmp_path / "resumed"
    torchrun(resumed, "--resume_from_checkpoint", str(out / "checkpoint-1"))
    for rank in (0, 1):
        straight, again = (torch.load(d / f"rank{rank}.pt", weights_only=True) for d in (out, resumed))
        assert again["sources"] == straight["sources"][1:]  # step 2 drew the same prompts on each rank
        for name in straight["params"]:
            assert torch.equal(straight["params"][name], again["params"][name]), (rank, name)

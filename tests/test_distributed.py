"""The GPU and multi-process paths of the RL stage, checked on CPU (detoxrl/distributed.py, docs/distributed.md).

* the judges go on the process's own device, from the shared accelerate state (CUDA faked);
* the frozen reference of ``finetuning: full`` goes where the accelerator put the policy (a fake device, ``meta``);
* the actor does not move during critic warm-up when the backward call also steps the optimiser (an accelerator
  that behaves like accelerate's DeepSpeed mode), and DeepSpeed's clipping takes ``max_grad_norm``;
* FSDP2 on 2 gloo processes: generation on unsharded parameters runs a different number of forwards on each rank,
  and the replay fit's head is written into its shards; and whole PPO steps on a module prepared by accelerate's own
  FSDP2 code (accelerate turns FSDP on only for GPU modes, so the test sets its state to FSDP by hand).
"""

from __future__ import annotations

import os
import subprocess
import sys
import types

import pytest
import torch
from accelerate import Accelerator

from rl.trainer import DetoxPPOTrainer
from tests.rl_helpers import CharShareReward, make_run, make_trainer, ppo_args

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture()
def run(tiny_dir, tmp_path):
    return make_run(tiny_dir("llama"), tmp_path, "causal")


# ---- devices --------------------------------------------------------------------------------------------------

class StopAfterReward(Exception):
    pass


def test_judges_go_on_this_process_gpu(run, toy_data, tmp_path, monkeypatch):
    """``rl/ppo.py`` under ``accelerate launch`` on GPU 1 of 2: ``reward_device: auto`` is the process's ``cuda:1``,
    not ``cuda`` (GPU 0 for every rank)."""
    import accelerate

    from rl import ppo

    class Rank1:  # accelerate's shared state on local rank 1 (the real one would set up CUDA)
        def __init__(self, *a, **k):
            self.device, self.local_process_index, self.is_main_process = torch.device("cuda", 1), 1, False

    import peft.tuners.lora.bnb  # noqa: F401  (bitsandbytes sets itself up for CUDA on import: import it first)

    seen = {}

    def reward(cfg, vocab=None, device=None):
        seen["device"] = device
        raise StopAfterReward

    parse = ppo.parse

    def parse_then_fake_cuda(args):  # TrainingArguments sets up its device while parsing: CUDA appears after
        parsed = parse(args)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
        monkeypatch.setattr(accelerate, "PartialState", Rank1)
        return parsed

    monkeypatch.setattr(ppo, "parse", parse_then_fake_cuda)
    monkeypatch.setattr("rewards.composite.CompositeReward", reward)  # rl/build.py imports it when it builds
    tsv, lex = toy_data
    with pytest.raises(StopAfterReward):
        ppo.run(["--model_name_or_path", run, "--dataset", str(tsv), "--lexicon_dir", str(lex), "--lexicons",
                 "ldnoobw", "--dev_size", "4", "--output_dir", str(tmp_path / "out"), "--finetuning", "lora",
                 "--report_to", "none"])
    assert seen["device"] == torch.device("cuda", 1)


def test_auto_judges_take_the_given_device_and_an_explicit_one_wins(monkeypatch):
    from rewards import composite
    from rewards.composite import CompositeReward, RewardConfig

    monkeypatch.setattr(composite, "build_toxicity_scorer", lambda cfg, device, vocab: device)
    cfg = RewardConfig(toxicity_backend="lexicon", w_similarity=0, w_fluency=0)
    assert CompositeReward(cfg, device=torch.device("cuda", 1)).device == torch.device("cuda", 1)
    assert CompositeReward(cfg).device == torch.device("cpu")
    pinned = RewardConfig(toxicity_backend="lexicon", w_similarity=0, w_fluency=0, reward_device="cpu")
    assert CompositeReward(pinned, device=torch.device("cuda", 1)).device == torch.device("cpu")


class MetaAccelerator(Accelerator):
    """An accelerator whose process device is ``meta``: stands in for ``cuda:N``, which this CPU cannot hold."""

    @property
    def device(self):
        return torch.device("meta")


def test_full_finetuning_reference_sits_beside_the_policy(tiny_dir, tmp_path):
    from detoxrl.models.config import DetoxModelConfig
    from rl.policy import load_policy

    run = make_run(tiny_dir("llama"), tmp_path, "causal")
    policy = load_policy(DetoxModelConfig(model_name_or_path=run, finetuning="full"))
    trainer = DetoxPPOTrainer(ppo_args(tmp_path / "out"), policy, CharShareReward(), ["a b"],
                              accelerator=MetaAccelerator(cpu=True))
    assert {p.device.type for p in trainer.unwrapped.policy.parameters()} == {"meta"}
    assert {p.device.type for p in policy.ref_model.parameters()} == {"meta"}
    assert not any(p.requires_grad for p in policy.ref_model.parameters())


# ---- DeepSpeed semantics ----------------------------------------------------------------------------------------

class DeepSpeedLikeAccelerator(Accelerator):
    """What accelerate's DeepSpeed mode does to a training loop: ``backward`` also steps the optimiser (and zeroes
    the gradients) at the end of an accumulation cycle, ``optimizer.step()``/``zero_grad()`` do nothing, and
    ``clip_grad_norm_`` only reads the norm (the engine clips by its config's ``gradient_clipping``)."""

    def prepare(self, *args):
        out = super().prepare(*args)
        wrapped = []
        for obj in out:
            if isinstance(obj, torch.optim.Optimizer):
                self.engine_optimizer = obj
                obj = types.SimpleNamespace(step=lambda: None, zero_grad=lambda set_to_none=True: None,
                                            param_groups=obj.param_groups, state_dict=obj.state_dict)
            wrapped.append(obj)
        return tuple(wrapped)

    def backward(self, loss, **kwargs):
        loss.backward(**kwargs)
        if self.sync_gradients:
            self.engine_optimizer.step()
            self.engine_optimizer.zero_grad()

    def clip_grad_norm_(self, parameters, max_norm, norm_type=2):
        return None


@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_critic_warmup_freezes_the_actor_when_backward_steps_the_optimizer(run, tmp_path, weight_decay):
    """A value head on the policy's own hidden states (the shared critic) gets its gradient through the policy;
    during warm-up none of it may reach the actor, nor may weight decay."""
    from detoxrl.models.config import DetoxModelConfig
    from rl.policy import load_policy

    policy = load_policy(DetoxModelConfig(model_name_or_path=run, finetuning="full"))
    args = ppo_args(tmp_path / "out", critic_warmup_steps=1, max_steps=2, value_learning_rate=0.01,
                    weight_decay=weight_decay)
    trainer = DetoxPPOTrainer(args, policy, CharShareReward(), ["a b", "c d"],
                              accelerator=DeepSpeedLikeAccelerator(cpu=True))
    actor = {n: p.detach().clone() for n, p in trainer.unwrapped.policy.named_parameters()}
    head = trainer.unwrapped.value_head.summary.weight.detach().clone()
    stats = trainer.step()
    assert stats["ppo/critic_warmup"] == 1.0
    moved = [n for n, p in trainer.unwrapped.policy.named_parameters() if not torch.equal(actor[n], p)]
    assert moved == []
    assert not torch.equal(head, trainer.unwrapped.value_head.summary.weight)  # the critic trained
    trainer.step()
    assert any(not torch.equal(actor[n], p) for n, p in trainer.unwrapped.policy.named_parameters())


def test_deepspeed_clipping_takes_max_grad_norm():
    from detoxrl.distributed import fill_deepspeed_clipping

    def acc(config):
        return types.SimpleNamespace(state=types.SimpleNamespace(deepspeed_plugin=types.SimpleNamespace(
            deepspeed_config=config)))

    auto, unset, pinned = {"gradient_clipping": "auto"}, {}, {"gradient_clipping": 0.5}
    for config in (auto, unset, pinned):
        fill_deepspeed_clipping(acc(config), 2.0)
    assert auto["gradient_clipping"] == unset["gradient_clipping"] == 2.0 and pinned["gradient_clipping"] == 0.5
    fill_deepspeed_clipping(types.SimpleNamespace(state=types.SimpleNamespace(deepspeed_plugin=None)), 2.0)


def test_a_deepspeed_like_trainer_is_built_with_the_clipping(run, tmp_path, monkeypatch):
    """The trainer fills DeepSpeed's clipping before ``prepare`` builds the engine."""
    from detoxrl import distributed

    calls = []
    monkeypatch.setattr(distributed, "fill_deepspeed_clipping", lambda acc, norm: calls.append(norm))
    make_trainer(run, tmp_path / "out", max_grad_norm=0.7)
    assert calls == [0.7]


# ---- FSDP2 on two gloo processes ---------------------------------------------------------------------------------

FSDP_SCRIPT = """
import sys, torch, torch.distributed as dist
sys.path.insert(0, {root!r})
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from transformers import AutoModelForCausalLM, AutoTokenizer
from detoxrl.distributed import assign, unsharded
from rl.value_head import PolicyWithValue

dist.init_process_group("gloo")
rank = dist.get_rank()
policy = AutoModelForCausalLM.from_pretrained({model!r})
reference = AutoModelForCausalLM.from_pretrained({model!r})
module = PolicyWithValue(policy, "causal", pack=False)
mesh = init_device_mesh("cpu", (2,))
for layer in policy.model.layers:
    fully_shard(layer, mesh=mesh)
fully_shard(module, mesh=mesh)
ids = torch.tensor([[3, 4, 5]]) if rank == 0 else torch.tensor([[6, 7, 8, 9, 10]])
n = 3 if rank == 0 else 9  # each rank runs its own number of forwards
with torch.no_grad(), unsharded(module) as full:
    got = full.policy.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False)
    want = reference.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False)
assert torch.equal(got, want), (rank, got, want)
hidden = module.value_head.summary.weight.shape[-1]
module.value_head.set(torch.arange(hidden, dtype=torch.float32), torch.tensor(0.5))
with unsharded(module):
    w = module.value_head.summary.weight.detach().clone()
assert torch.equal(w.flatten(), torch.arange(hidden, dtype=torch.float32)), w
loss = module(ids[:, :2], torch.ones(1, 2, dtype=torch.long), ids[:, 2:3], torch.ones(1, 1)).logprobs.sum()
loss.backward()  # the sharded module still trains after the gather
open({out!r} + "/rank%d.ok" % rank, "w").close()
dist.destroy_process_group()
"""


def test_fsdp2_generation_on_unsharded_parameters_two_gloo_processes(tiny_dir, tmp_path):
    script = tmp_path / "fsdp.py"
    script.write_text(FSDP_SCRIPT.format(root=ROOT, model=tiny_dir("llama"), out=str(tmp_path)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29547",
           str(script)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "rank0.ok").exists() and (tmp_path / "rank1.ok").exists()


def test_ppo_refuses_fsdp1_in_one_line_and_takes_fsdp2_and_zero3():
    from detoxrl.errors import UserError
    from detoxrl.distributed import backend, check_backend

    def acc(fsdp=None, zero=None):
        ds = types.SimpleNamespace(zero_stage=zero) if zero else None
        return types.SimpleNamespace(state=types.SimpleNamespace(
            deepspeed_plugin=ds, fsdp_plugin=types.SimpleNamespace(fsdp_version=fsdp) if fsdp else None))

    with pytest.raises(UserError, match="fsdp_version: 2.*configs/accelerate/fsdp.yaml"):
        check_backend(acc(fsdp=1))
    for ok in (acc(fsdp=2), acc(zero=3), acc()):
        check_backend(ok)
    assert backend(acc(zero=3)) == (3, None) and backend(acc(fsdp=2)) == (0, 2) and backend(acc()) == (0, None)


def test_zero3_gathers_through_trl_and_the_trainer_gathers_for_generation_and_reference(run, tmp_path, monkeypatch):
    """Under ZeRO-3 ``gathered`` is TRL's ``unwrap_model_for_generation``; a PPO step enters it for the rollout and
    for the reference pass (a sharded module would otherwise generate from its shards)."""
    from contextlib import contextmanager

    import trl.models.utils

    from detoxrl import distributed

    @contextmanager
    def trl_gather(model, accelerator):
        yield "gathered by trl"

    monkeypatch.setattr(trl.models.utils, "unwrap_model_for_generation", trl_gather)
    zero3 = types.SimpleNamespace(state=types.SimpleNamespace(
        deepspeed_plugin=types.SimpleNamespace(zero_stage=3), fsdp_plugin=None))
    with distributed.gathered(object(), zero3) as full:
        assert full == "gathered by trl"

    trainer = make_trainer(run, tmp_path / "out", max_steps=1)
    entered, real = [], distributed.gathered

    @contextmanager
    def counting(model, accelerator):
        with real(model, accelerator) as full:
            entered.append(model is trainer.model)
            yield full

    monkeypatch.setattr(distributed, "gathered", counting)
    trainer.step()
    assert entered == [True, True]  # the rollout, then the reference pass


FSDP_PPO_SCRIPT = """
import sys, torch
sys.path.insert(0, {root!r})
from accelerate import Accelerator
from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
from detoxrl.models.config import DetoxModelConfig
from detoxrl.distributed import backend, unsharded
from rl.policy import load_policy
from rl.save import full_module, save_ppo_result
from rl.trainer import DetoxPPOTrainer
from tests.rl_helpers import PROMPTS, CharShareReward, ppo_args


class FSDP2OnCPU(Accelerator):
    # accelerate's FSDP2 path (Accelerator._prepare_fsdp2, fsdp2_prepare_model) on gloo: accelerate itself enables FSDP
    # only for GPU-type distributed modes, so the state is set as `accelerate launch --config_file fsdp.yaml` sets it
    def __init__(self, **kw):
        super().__init__(**kw)
        self.state.fsdp_plugin = FullyShardedDataParallelPlugin(
            fsdp_version=2, auto_wrap_policy="transformer_based_wrap", reshard_after_forward=True,
            transformer_cls_names_to_wrap=["LlamaDecoderLayer"], state_dict_type="FULL_STATE_DICT",
            cpu_ram_efficient_loading=False)
        self.state.distributed_type = DistributedType.FSDP


torch.manual_seed(0)
model_cfg = DetoxModelConfig(model_name_or_path={run!r}, finetuning="full")
policy = load_policy(model_cfg)
start = {{n: p.detach().clone() for n, p in policy.model.named_parameters()}}
args = ppo_args({out!r}, max_steps=2, value_learning_rate=0.01, learning_rate=1e-2)  # TrainingArguments resets state
trainer = DetoxPPOTrainer(args, policy, CharShareReward(), PROMPTS, accelerator=FSDP2OnCPU(cpu=True))
assert type(trainer.model).__name__.startswith("FSDP") and backend(trainer.accelerator) == (0, 2)
for _ in range(2):
    stats = trainer.step()
with unsharded(trainer.unwrapped) as full:
    params = {{n.replace("policy.", "", 1): p.detach().clone() for n, p in full.named_parameters()
              if n.startswith("policy.")}}
torch.save({{"params": params, "start": start, "score": stats["reward/score"]}},
           {out!r} + "/rank%d.pt" % trainer.accelerator.process_index)
module = full_module(trainer, model_cfg)  # what rl/ppo.py saves from
if trainer.accelerator.is_main_process:
    save_ppo_result(trainer, model_cfg, {{"before": {{}}, "after": {{}}}}, dict(
        algorithm="PPO", family="causal", finetuning="full", policy_adapter="-", reward="toy", steps=2, batch=8,
        minutes=0.0), module)
"""


def test_ppo_steps_under_accelerates_fsdp2_two_gloo_processes(tiny_dir, tmp_path):
    """Two PPO steps under FSDP2 as accelerate prepares it: every rank ends with the same full weights, moved, and
    the run folder's model holds them."""
    run = make_run(tiny_dir("llama"), tmp_path, "causal")
    out = tmp_path / "out"
    out.mkdir()
    script = tmp_path / "fsdp_ppo.py"
    script.write_text(FSDP_PPO_SCRIPT.format(root=ROOT, run=run, out=str(out)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "ACCELERATE_USE_CPU": "true"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29548",
           str(script)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["params"].keys() == r0["start"].keys()
    for name, p in r0["params"].items():
        assert torch.equal(p, r1["params"][name]), name
    assert any(not torch.equal(p, r0["start"][n]) for n, p in r0["params"].items())  # training moved the weights
    from transformers import AutoModelForCausalLM

    saved = dict(AutoModelForCausalLM.from_pretrained(out / "adapter").named_parameters())  # the run folder's model
    for name, p in r0["params"].items():
        assert torch.equal(saved[name].detach(), p), name


def test_sft_under_sharded_parameters_saves_through_transformers_and_guards_on_gathered_weights(
        tiny_dir, toy_data, tmp_path, monkeypatch):
    """With parameters sharded (ZeRO-3/FSDP, forced here) SFT saves adapter/ with ``Trainer.save_model`` (which
    gathers), merges by reloading the base, and runs the guard inside ``gathered``: the same run folder as the
    unsharded path."""
    from contextlib import contextmanager

    from safetensors.torch import load_file

    import sft.train
    from detoxrl import distributed
    from tests.test_sft_train import _args

    model = tiny_dir("llama")
    sft.train.run(_args(model, toy_data, tmp_path / "plain", "--seed", "3"))
    entered, real = [], distributed.gathered

    @contextmanager
    def counting(module, accelerator):
        with real(module, accelerator) as full:
            entered.append(type(full).__name__)
            yield full

    monkeypatch.setattr(distributed, "gathered", counting)
    monkeypatch.setattr(sft.train, "params_sharded", lambda accelerator: True)
    sft.train.run(_args(model, toy_data, tmp_path / "sharded", "--seed", "3"))
    assert entered and set(entered) == {"PeftModelForCausalLM"}  # the guard's generation, on the gathered model
    assert not (tmp_path / "sharded" / "adapter.tmp").exists()
    for folder in ("adapter", "merged"):
        name = "adapter_model.safetensors" if folder == "adapter" else "model.safetensors"
        plain, sharded = (load_file(str(tmp_path / d / folder / name)) for d in ("plain", "sharded"))
        assert plain.keys() == sharded.keys()
        for key in plain:
            assert torch.equal(plain[key], sharded[key]), (folder, key)
    assert (tmp_path / "sharded" / "adapter" / "tokenizer.json").exists()

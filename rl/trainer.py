"""``DetoxPPOTrainer``: the PPO loop for seq2seq and causal detox policies, on accelerate.

Written by hand because TRL removed its PPOTrainer (1.13) and it never took a seq2seq policy or a
Python reward. It uses TRL's ``selective_log_softmax``/``entropy_from_logits`` (in
``rl/value_head.py``) and ``disable_dropout_in_model``. One ``step`` reads top to bottom:

1. sample ``rollout_batch_size / samples_per_prompt`` training sources and generate ``samples_per_prompt``
   responses to each (``rl/rollout.py``);
2. score them with the composite reward, subtract ``truncation_penalty`` where no EOS came, and
   normalise (``reward_norm``);
3. log-probs under the reference; log-probs under the current policy (recorded during the first update pass
   when the rollout is a single micro-batch) and the critic's values (``rl/critics.py``: the value head, the
   head refitted in closed form, or the feature critic; the step never asks which);
4. per-token rewards ``-(kl_coef / sigma) * KL_t`` plus the normalised score on the last token, with
   ``sigma`` the divisor of the score's normalisation (1 for ``reward_norm: none``), so ``kl_coef``
   is in raw score units per nat whatever ``reward_norm`` is; GAE, whitened advantages;
5. ``ppo_epochs`` x ``num_mini_batches`` optimiser steps of the clipped policy loss plus
   ``vf_coef`` x the critic's value loss, with gradient accumulation and clipping; the epochs stop
   early when a minibatch's approximate KL passes ``early_stop_kl``. During the first
   ``critic_warmup_steps`` steps only the value loss is optimised and the actor's weights do not move
   (its loss is masked and the values read the trunk's states detached, so its gradient is 0 even where
   the backward call steps the optimiser, as under DeepSpeed); the critic's weights (value head, and a
   separate critic model) have their own AdamW group (``value_learning_rate``). After the epochs the critic
   updates itself (``Critic.update``: a closed-form refit for the replay head and the feature critic);
6. update the KL coefficient, log, checkpoint every ``save_steps`` (``rl/checkpoint.py``).

``callbacks`` (``rl/callbacks.py``) hook into the rollout, the critic's update and the end of each step.

Generation, the reference pass and the dev evaluation (main process only) run on the full parameters under
ZeRO-3/FSDP (``detoxrl/distributed.py``).

All arithmetic is in ``rl/core.py``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm
from trl.trainer.utils import disable_dropout_in_model

from detoxrl.errors import UserError
from detoxrl.metrics import is_copy
from rewards.composite import CompositeReward
from rl import checkpoint as ckpt
from rl.callbacks import call
from detoxrl import distributed as dist
from rl.config import DetoxPPOConfig
from rl.core import (AdaptiveKLController, FixedKLController, RunningMoments, check_finite, explained_variance, gae,
                     kl_penalty, masked_mean, masked_whiten, normalisation_scale, normalise_scores, penalise_truncation,
                     per_token_rewards, policy_loss)
from rl.critics import make_critic
from rl.policy import Policy
from rl.rollout import Rollout, eos_ids, generate_rollout, length_caps
from rl.value_head import ForwardOut, PolicyWithValue

log = logging.getLogger("detoxrl")


@dataclass
class TrainerState:
    """Everything besides weights and optimiser that a checkpoint must restore."""

    step: int = 0
    kl_controller: dict = field(default_factory=dict)
    reward_moments: dict = field(default_factory=dict)
    before: dict = field(default_factory=dict)  # dev metrics before training
    log_history: list[dict] = field(default_factory=list)


class DetoxPPOTrainer:
    def __init__(self, args: DetoxPPOConfig, policy: Policy, reward: CompositeReward, prompts: list[str],
                 accelerator=None, evaluator=None, lexicon=None, callbacks=None, critic=None):
        """``critic``: an ``rl.critics.Critic`` to use instead of the one ``args.critic_config`` names."""
        from accelerate import Accelerator
        from transformers import get_scheduler

        if not prompts:
            raise UserError("no training prompts left (check the dataset and max_prompt_length)")
        self.args, self.policy, self.reward, self.prompts, self.evaluator = args, policy, reward, prompts, evaluator
        self.callbacks, self.should_stop = list(callbacks or []), False  # rl/callbacks.py
        self.accelerator = accelerator or Accelerator(
            gradient_accumulation_steps=args.gradient_accumulation_steps, cpu=args.use_cpu,
            log_with=_trackers(args.report_to), project_dir=args.output_dir)
        dist.check_backend(self.accelerator)
        dist.fill_deepspeed_clipping(self.accelerator, args.max_grad_norm)
        ckpt.register_hooks(self.accelerator)
        for m in (policy.model, policy.critic):
            if m is not None:
                disable_dropout_in_model(m)
        self.module = PolicyWithValue(policy.model, policy.family, policy.critic, pack=args.pack_sequences,
                                      max_packed_tokens=args.max_packed_tokens)
        ratio = getattr(getattr(reward, "cfg", None), "max_length_ratio", 2.0)  # the reward's blow-up threshold
        self.critic = critic or make_critic(args.critic_config, policy.tokenizer, lexicon, args.samples_per_prompt,
                                            ratio)
        self.critic.attach(self.module)  # a head the critic sets (or does not read) is out of AdamW
        critic_params = [p for m in (self.module.value_head, self.module.critic) if m is not None
                         for p in m.parameters() if p.requires_grad]
        critic_ids = {id(p) for p in critic_params}
        self.actor_params = [p for p in self.module.parameters() if p.requires_grad and id(p) not in critic_ids]
        value_lr = args.critic_config.learning_rate
        value_lr = args.learning_rate if value_lr is None else value_lr
        self.optimizer = torch.optim.AdamW([{"params": self.actor_params, "lr": args.learning_rate},
                                            {"params": critic_params, "lr": value_lr}],
                                           lr=args.learning_rate, weight_decay=args.weight_decay,
                                           betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_epsilon)
        # accelerate steps a prepared scheduler once per process per optimiser step, hence the factor
        updates = args.max_steps * args.ppo_epochs * args.num_mini_batches * self.accelerator.num_processes
        self.scheduler = get_scheduler(args.lr_scheduler_type, self.optimizer,
                                       num_warmup_steps=args.get_warmup_steps(updates), num_training_steps=updates)
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(self.module, self.optimizer,
                                                                              self.scheduler)
        if policy.ref_model is not None:  # finetuning: full: the frozen copy goes where the policy went
            policy.ref_model = dist.place_reference(policy.ref_model, self.accelerator)
        self.kl_ctl = (AdaptiveKLController(args.kl_coef, args.target_kl, args.kl_horizon) if args.adaptive_kl
                       else FixedKLController(args.kl_coef))
        self.moments = RunningMoments()
        self.prompt_gen = torch.Generator().manual_seed(args.seed + self.accelerator.process_index)
        self.state = TrainerState()
        self.eos = eos_ids(self.unwrapped.policy, policy.tokenizer)
        self.gen_kwargs = dict(do_sample=True, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                               top_k=args.top_k, top_p=args.top_p)
        self.fused = args.micro_batch_size == args.rollout_batch_size

    @property
    def unwrapped(self) -> PolicyWithValue:
        return self.accelerator.unwrap_model(self.model)

    # ---------------------------------------------------------------------------------------------- rollout
    def sample_sources(self) -> list[str]:
        """``rollout_batch_size / samples_per_prompt`` training sources, each repeated ``samples_per_prompt`` times
        in a row (rows ``g*n .. g*n+n-1`` answer the same source)."""
        n = self.args.samples_per_prompt
        idx = torch.randint(len(self.prompts), (self.args.rollout_batch_size // n,), generator=self.prompt_gen)
        return [self.prompts[i] for i in idx.tolist() for _ in range(n)]

    def collect(self) -> tuple[Rollout, torch.Tensor, dict]:
        """Generate, score, penalise truncation and normalise: ``(rollout, score (B,), reward stats)``; the stats'
        ``reward/norm_scale`` is the divisor of the normalisation (``advantages`` puts the KL in those units)."""
        t0 = time.perf_counter()
        sources = self.sample_sources()
        with dist.gathered(self.model, self.accelerator) as full:
            ro = generate_rollout(full.policy, self.policy.formatter, sources, self.gen_kwargs, self.eos,
                                  self.length_caps(sources), fast=self.args.fast_sampling)
        t1 = time.perf_counter()
        breakdown = self.reward(ro.sources, ro.texts)
        raw = penalise_truncation(breakdown.total, ro.truncated.cpu(), self.args.truncation_penalty)
        score = normalise_scores(raw, self.args.reward_norm, self.moments, self.args.reward_clip)
        scale = normalisation_scale(raw, self.args.reward_norm, self.moments)
        stats = {"reward/norm_scale": scale, **breakdown.means(), "reward/score": float(raw.mean()),
                 "rollout/truncated": float(ro.truncated.float().mean()),
                 "rollout/capped": float(ro.capped.float().mean()),
                 **{f"work/{k}": float(v) for k, v in ro.work.items()},
                 "rollout/response_length": float(ro.lengths.mean()),
                 "rollout/copy_rate": sum(map(is_copy, ro.sources, ro.texts)) / len(ro.texts),
                 "time/generate_s": t1 - t0, "time/reward_s": time.perf_counter() - t1}
        self._last_samples = (ro, breakdown, raw)
        call(self.callbacks, "on_rollout", self, ro, breakdown, raw, score)
        return ro, score.to(ro.response.device), stats

    def length_caps(self, sources: list[str]) -> torch.Tensor:
        """Per-row caps on new tokens (``max_new_tokens_ratio``; all ``max_new_tokens`` when it is unset)."""
        a = self.args
        if a.max_new_tokens_ratio is None:
            n = torch.zeros(len(sources), dtype=torch.long)
        else:
            ids = self.policy.tokenizer(sources, add_special_tokens=False)["input_ids"]
            n = torch.tensor([len(x) for x in ids], dtype=torch.long)
        return length_caps(n, a.max_new_tokens, a.max_new_tokens_ratio, a.max_new_tokens_extra)

    # ---------------------------------------------------------------------------------------------- advantages
    def advantages(self, old: ForwardOut, ref_logprobs: torch.Tensor, score: torch.Tensor, mask: torch.Tensor, step: int,
                   scale: float):
        """KL-shaped per-token rewards -> GAE -> (whitened advantages, returns, per-token KL); ``scale``: the divisor
        of the scores' normalisation, so the KL penalty is ``kl_coef`` per nat in raw score units."""
        kl = kl_penalty(old.logprobs, ref_logprobs, self.args.kl_estimator) * mask
        rewards = per_token_rewards(score, kl, self.kl_ctl.value / scale, mask)
        adv, returns = gae(rewards, old.values, mask, self.args.gamma, self.args.lam)
        if self.args.whiten_advantages and mask.sum() > 1:
            adv = masked_whiten(adv, mask)
        check_finite("rewards", rewards, step)
        check_finite("advantages", adv, step)
        return adv, returns, kl

    # ---------------------------------------------------------------------------------------------- one step
    def step(self) -> dict[str, float]:
        a, step = self.args, self.state.step + 1
        t0 = time.perf_counter()
        ro, score, stats = self.collect()
        scale = stats["reward/norm_scale"]
        mask = ro.response_mask
        t_ref = time.perf_counter()
        with torch.no_grad(), dist.gathered(self.model, self.accelerator) as full, self.policy.reference() as ref:
            ref_logprobs = full.logprobs(ref, *ro.tensors(), temperature=a.temperature)
        t_update = time.perf_counter()
        stats["time/reference_s"] = t_update - t_ref
        stats["work/scored_tokens"] = float(self.unwrapped.scored_tokens(*ro.tensors()))
        old = adv = returns = kl = None
        critic = self.critic  # rl/critics.py: values, value loss and refit, whichever strategy it is
        critic_in, critic_stats = critic.prepare(ro, score, mask)
        stats.update(critic_stats)
        if not self.fused:
            with torch.no_grad():
                old = self.model(*ro.tensors(), temperature=a.temperature, with_values=critic.head_values,
                                 with_features=critic.needs_features).detached()
            old = critic.values(old, critic_in, mask)
            adv, returns, kl = self.advantages(old, ref_logprobs, score, mask, step, scale)
        acc = {k: [] for k in ("policy_loss", "value_loss", "clipfrac", "vf_clipfrac", "approx_kl", "entropy")}
        stopped = False
        # critic warm-up: the actor's loss is masked and the values read the trunk's states detached, so the actor's
        # gradient is exactly 0 even where backward steps the optimiser (DeepSpeed); no weight decay there either
        warmup = step <= a.critic_warmup_steps
        self.optimizer.param_groups[0]["weight_decay"] = 0.0 if warmup else a.weight_decay
        B = a.rollout_batch_size
        for epoch in range(a.ppo_epochs):
            order = torch.arange(B) if self.fused else torch.randperm(B, generator=self.prompt_gen)
            for mb in order.split(a.mini_batch_size):
                mb_kl = []
                for micro in mb.split(a.micro_batch_size):
                    micro = micro.to(mask.device)
                    with self.accelerator.accumulate(self.model):
                        out = self.model(*ro.tensors(micro), temperature=a.temperature,
                                         with_values=critic.head_values,
                                         with_features=critic.needs_features and old is None, critic_only=warmup)
                        if old is None:  # fused first pass: the current policy IS the rollout policy
                            old = critic.values(out.detached(), critic_in, mask)
                            adv, returns, kl = self.advantages(old, ref_logprobs, score, mask, step, scale)
                        m = mask[micro]
                        pg, clipfrac, approx_kl = policy_loss(out.logprobs, old.logprobs[micro], adv[micro], m,
                                                              a.clip_range)
                        vf, vf_clipfrac = critic.loss(out, old, returns, micro, m, a.clip_range_value)
                        # warm-up: 0 * pg keeps every parameter in the graph (DDP) with a zero gradient
                        loss = (0.0 if warmup else 1.0) * pg + a.vf_coef * vf
                        check_finite("loss", loss, step)
                        self.accelerator.backward(loss)
                        if warmup:  # where the optimiser steps after backward, AdamW then skips the actor entirely:
                            for p in self.actor_params:  # its step count and moments start at its first real step
                                p.grad = None
                        if self.accelerator.sync_gradients and a.max_grad_norm:
                            self.accelerator.clip_grad_norm_(self.model.parameters(), a.max_grad_norm)
                        self.optimizer.step()
                        self.scheduler.step()
                        self.optimizer.zero_grad()
                    for k, v in (("policy_loss", pg), ("value_loss", vf), ("clipfrac", clipfrac),
                                 ("vf_clipfrac", vf_clipfrac), ("approx_kl", approx_kl),
                                 ("entropy", masked_mean(out.entropy, m))):
                        acc[k].append(float(v.detach()))
                    mb_kl.append(float(approx_kl))
                if a.early_stop_kl is not None and self._mean_all(sum(mb_kl) / len(mb_kl)) > a.early_stop_kl:
                    stopped = True
                    break
            if stopped:
                break
        call(self.callbacks, "on_critic_update", self, critic_in, old.values, returns, mask)
        stats.update(critic.update(self, critic_in, old, returns, mask))
        seq_kl = float((kl.sum(1)).mean())
        self.kl_ctl.update(self._mean_all(seq_kl), B * self.accelerator.num_processes)
        stats.update({f"ppo/{k}": sum(v) / len(v) for k, v in acc.items() if v})
        stats.update({"ppo/kl": seq_kl, "ppo/kl_coef": self.kl_ctl.value,
                      "ppo/kl_coef_normalised": self.kl_ctl.value / scale,
                      "ppo/critic_warmup": float(warmup), "ppo/early_stopped": float(stopped),
                      "ppo/explained_variance": explained_variance(old.values, returns, mask),
                      "ppo/lr": self.scheduler.get_last_lr()[0], "ppo/value_lr": self.scheduler.get_last_lr()[-1],
                      "time/update_s": time.perf_counter() - t_update,
                      "time/step_s": time.perf_counter() - t0})
        self.state.step = step
        return self._reduce(stats)

    def sum_over_processes(self, moments: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A rollout's replay statistics summed over processes (every process then fits the same critic)."""
        if self.accelerator.num_processes == 1:
            return moments
        return {k: self.accelerator.reduce(v.to(self.accelerator.device), reduction="sum").cpu()
                for k, v in moments.items()}

    # ---------------------------------------------------------------------------------------------- the run
    def train(self, resume_from: str | None = None) -> dict:
        a = self.args
        if resume_from:
            ckpt.load(resume_from, self)
            log.info("resumed from %s at step %d", resume_from, self.state.step)
        main = self.accelerator.is_main_process
        if self.accelerator.log_with:
            self.accelerator.init_trackers("runs")
        if self.evaluator is not None and not self.state.before:  # the same on every rank (resume reads it)
            self.state.before = self.evaluate()
            if main:
                log.info("dev before PPO: %s", _fmt(self.state.before))
        bar = tqdm(total=a.max_steps, initial=self.state.step, desc="ppo", unit="step",
                   disable=not main or a.disable_tqdm)
        try:
            while self.state.step < a.max_steps and not self.should_stop:
                stats = self.step()
                call(self.callbacks, "on_step_end", self, stats)
                self.state.log_history.append({"step": self.state.step, **stats})
                if self.state.step % max(int(a.logging_steps), 1) == 0:
                    self.accelerator.log(stats, step=self.state.step)
                if a.sample_every and self.state.step % a.sample_every == 0:
                    self.log_samples()
                bar.update(1)
                bar.set_postfix(score=f"{stats['reward/score']:.3f}", kl=f"{stats['ppo/kl']:.2f}",
                                copy=f"{stats['rollout/copy_rate']:.2f}")
                if a.save_steps and self.state.step % int(a.save_steps) == 0 and self.state.step < a.max_steps:
                    ckpt.save(self)
        except FloatingPointError as exc:
            last = ckpt.latest(a.output_dir)
            raise UserError(f"{exc}; stopped. The last good checkpoint is {last or 'none (none was saved yet)'}; "
                            "lower learning_rate or kl_coef, or set reward_clip") from None
        finally:
            bar.close()
        after = self.evaluate() if self.evaluator is not None else {}
        if after:
            log.info("dev after PPO: %s", _fmt(after))
        return {"before": self.state.before, "after": after, "steps": self.state.step}

    def evaluate(self) -> dict:
        """The dev evaluator's metrics, computed on the main process (the others get ``{}``); collective, since under
        ZeRO-3/FSDP the full parameters are gathered on every rank."""
        with dist.gathered(self.model, self.accelerator) as full:
            return self.evaluator(full.policy) if self.accelerator.is_main_process else {}

    def log_samples(self) -> None:
        ro, br, raw = self._last_samples
        n = min(self.args.samples_logged, len(ro.texts))
        rows = ["| source | output | score | toxicity | similarity | fluency |", "|---|---|---:|---:|---:|---:|"]
        for i in range(n):
            part = [("-" if getattr(br, c) is None else f"{float(getattr(br, c)[i]):.3f}")
                    for c in ("toxicity", "similarity", "fluency")]
            rows.append(f"| {_cell(ro.sources[i])} | {_cell(ro.texts[i])} | {float(raw[i]):.3f} | " + " | ".join(part) + " |")
        table = "\n".join(rows)
        if self.accelerator.is_main_process:
            log.info("samples at step %d:\n%s", self.state.step, table)
            self.accelerator.log({"samples": table}, step=self.state.step)

    # ---------------------------------------------------------------------------------------------- helpers
    def _mean_all(self, value: float) -> float:
        return self._reduce({"value": value})["value"]

    def _reduce(self, stats: dict[str, float]) -> dict[str, float]:
        """Mean of every stat over processes (NaN-free stats only; NaN stays local)."""
        if self.accelerator.num_processes == 1:
            return stats
        keys = sorted(stats)
        t = torch.tensor([stats[k] for k in keys], dtype=torch.float64, device=self.accelerator.device)
        t = self.accelerator.reduce(t, reduction="mean")
        return {k: float(v) for k, v in zip(keys, t.tolist())}


def _trackers(report_to) -> list[str] | None:
    names = [report_to] if isinstance(report_to, str) else list(report_to or [])
    names = [n for n in names if n not in ("none", "")]
    return names or None


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")[:120]


def _fmt(metrics: dict) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in metrics.items() if isinstance(v, float) and not math.isnan(v))


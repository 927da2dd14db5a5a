"""``algorithm: grpo | rloo``: TRL's GRPOTrainer / RLOOTrainer with detoxrl's reward, for causal policies.

The same policy (SFT run + fresh adapter), prompts (the shared prompt format, as plain strings),
sampling settings and reward feed TRL's trainers, so the algorithms can be compared directly:

* ``form: weighted_sum``: each reward component is its own ``reward_func`` (``toxicity`` scores
  ``1 - P(toxic)``) with ``reward_weights`` ``w_k / sum(w)``, plus a ``penalties`` function with weight 1
  (copy, empty, length blow-up and truncation). TRL sums them: exactly our weighted sum;
* ``form: product``: a product is not a weighted sum, so one ``composite`` function returns our total.

The judges run once per batch whatever the number of functions (``ComponentRewards`` caches the last
batch). Our batch fields map to TRL's: ``rollout_batch_size`` completions per step
(``per_device_train_batch_size``) in groups of ``num_generations``, ``ppo_epochs`` ->
``num_iterations``, ``kl_coef`` -> ``beta``, ``clip_range`` -> ``epsilon``; ``use_vllm`` and ``vllm_mode`` pass
through unchanged (``DetoxPPOConfig`` refuses them without vllm installed).

KL units (``kl_coef`` is raw score per nat in our PPO, whatever ``reward_norm``):

* RLOO subtracts ``beta * sum_t (logp - logp_ref)`` from the raw reward before any normalisation, so
  ``beta = kl_coef`` has our units exactly; ``reward_norm`` other than ``none`` maps to
  ``normalize_advantages: true`` (the normalisation then rescales score and KL together, as ours does);
* GRPO adds ``beta * k3_t`` to the per-token loss, outside the advantage. ``reward_norm: none`` maps to
  ``scale_rewards: none`` (advantages in raw score units, so ``beta = kl_coef`` has our units, averaged
  over tokens instead of summed); otherwise TRL's ``scale_rewards: group`` divides the advantage by the
  group's score std ``sigma_g`` but not the KL term, so ``beta = kl_coef`` then acts like ``kl_coef / sigma_g``
  in our units (as our PPO's KL did before it was scaled): set ``kl_coef`` lower to match.
"""

from __future__ import annotations

import dataclasses
import logging

import torch

from detoxrl.errors import UserError
from rewards.composite import CompositeReward

log = logging.getLogger("detoxrl")


class ComponentRewards:
    """TRL reward functions over one cached ``CompositeReward`` call per batch."""

    def __init__(self, reward: CompositeReward, truncation_penalty: float, eos: list[int]):
        self.reward, self.truncation_penalty, self.eos = reward, truncation_penalty, set(eos)
        self._key, self._value = None, None

    def _breakdown(self, sources, completions):
        key = (tuple(sources), tuple(completions))
        if key != self._key:
            self._key, self._value = key, self.reward(list(sources), [c.strip() for c in completions])
        return self._value

    def _truncated(self, completion_ids) -> torch.Tensor:
        return torch.tensor([not ids or ids[-1] not in self.eos for ids in completion_ids], dtype=torch.float32)

    def functions(self) -> tuple[list, list[float]]:
        """``(reward_funcs, reward_weights)`` for TRL (see the module docstring)."""
        cfg = self.reward.cfg

        def make(name, pick):
            def fn(prompts, completions, completion_ids, source, **kwargs):
                br = self._breakdown(source, completions)
                return [float(x) for x in pick(br, completion_ids)]
            fn.__name__ = name
            return fn

        trunc = lambda br, ids: -self.truncation_penalty * self._truncated(ids)  # noqa: E731
        if cfg.form == "product":
            return [make("composite", lambda br, ids: br.total + trunc(br, ids))], [1.0]
        weights = self.reward.weights
        total = sum(weights.values())
        funcs, ws = [], []
        for name in weights:
            pick = (lambda br, ids: 1.0 - br.toxicity) if name == "toxicity" else (
                lambda br, ids, n=name: getattr(br, n))
            funcs.append(make(name, pick))
            ws.append(weights[name] / total)
        funcs.append(make("penalties", lambda br, ids: -br.penalty + trunc(br, ids)))
        ws.append(1.0)
        return funcs, ws


def trl_config(args, algorithm: str):
    """GRPOConfig / RLOOConfig with our settings (see the module docstring)."""
    from trl import GRPOConfig, RLOOConfig

    cls = GRPOConfig if algorithm == "grpo" else RLOOConfig
    if args.rollout_batch_size % args.num_generations:
        raise UserError(f"rollout_batch_size {args.rollout_batch_size} is not a multiple of num_generations "
                        f"{args.num_generations}; {algorithm} samples num_generations completions per prompt")
    kw = dict(output_dir=args.output_dir, learning_rate=args.learning_rate, max_steps=args.max_steps,
              per_device_train_batch_size=args.rollout_batch_size,
              gradient_accumulation_steps=args.gradient_accumulation_steps, num_generations=args.num_generations,
              max_completion_length=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
              top_p=args.top_p, beta=args.kl_coef, epsilon=args.clip_range, num_iterations=args.ppo_epochs,
              max_grad_norm=args.max_grad_norm, lr_scheduler_type=args.lr_scheduler_type,
              warmup_steps=args.warmup_steps, logging_steps=args.logging_steps, save_steps=args.save_steps,
              save_total_limit=args.save_total_limit, report_to=args.report_to, seed=args.seed, use_cpu=args.use_cpu,
              bf16=args.bf16, disable_dropout=True, disable_tqdm=args.disable_tqdm,
              log_completions=False, use_vllm=args.use_vllm, vllm_mode=args.vllm_mode)
    if algorithm == "grpo":  # see the module docstring: KL units
        if args.reward_norm == "none":
            kw["scale_rewards"] = "none"
    else:
        kw["normalize_advantages"] = args.reward_norm != "none"
    # transformers 5 renamed gradient_checkpointing; TRL's configs default it to True (an order of magnitude
    # slower on CPU), so pass ours under whichever name this version uses
    names = {f.name for f in dataclasses.fields(cls)}
    kw["activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"] = (
        args.gradient_checkpointing)
    return cls(**kw)


def build_trl_trainer(args, policy, reward: CompositeReward, prompts: list[str]):
    """The TRL trainer for ``args.algorithm`` on ``policy`` with our reward (not trained yet)."""
    from datasets import Dataset
    from trl import GRPOTrainer, RLOOTrainer

    if policy.family != "causal":
        raise UserError(f"algorithm: {args.algorithm} runs TRL's trainer, which takes causal LMs only; this policy "
                        "is seq2seq. Use algorithm: ppo")
    from rl.rollout import eos_ids

    funcs, weights = ComponentRewards(reward, args.truncation_penalty, eos_ids(policy.model, policy.tokenizer)).functions()
    cfg = trl_config(args, args.algorithm)
    cfg.reward_weights = weights
    data = Dataset.from_dict({"prompt": [policy.formatter.prompt(s) for s in prompts], "source": prompts})
    policy.tokenizer.padding_side = "left"
    cls = GRPOTrainer if args.algorithm == "grpo" else RLOOTrainer
    return cls(model=policy.model, reward_funcs=funcs, args=cfg, train_dataset=data, processing_class=policy.tokenizer)


def run_trl(args, policy, reward, prompts, model_cfg, evaluator=None, resume: str | None = None) -> dict:
    """Train with TRL's GRPO/RLOO and save the run folder like the PPO stage does."""
    from rl.save import save_policy

    from detoxrl.distributed import gathered

    trainer = build_trl_trainer(args, policy, reward, prompts)
    main = trainer.accelerator.is_main_process
    before = evaluator(policy.model) if evaluator and main else {}  # not prepared yet: the full model everywhere
    result = trainer.train(resume_from_checkpoint=resume)
    with gathered(trainer.model_wrapped, trainer.accelerator) as model:  # full parameters under ZeRO-3/FSDP
        after = evaluator(model) if evaluator and main else {}
        summary = {"before": before, "after": after, "steps": trainer.state.global_step,
                   "train_loss": result.training_loss}
        if main:
            save_policy(args.output_dir, policy, model, model_cfg, args.algorithm, summary, args.merge_adapter)
    trainer.accelerator.wait_for_everyone()
    return summary

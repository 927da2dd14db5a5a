"""RL stage: ``accelerate launch rl/ppo.py``. PPO (own, for seq2seq and causal) plus TRL GRPO/RLOO."""

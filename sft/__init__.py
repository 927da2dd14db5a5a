"""Supervised stage (SFT): ``accelerate launch sft/train.py``. Losses: ce, toxic_penalty, toxic_mask."""

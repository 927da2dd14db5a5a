"""Judges and rewards: toxicity, similarity and fluency scorers, the composite reward, detox-eval."""

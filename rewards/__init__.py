"""What the policy is paid: toxicity, similarity and fluency scorers and the composite reward.

How systems are judged lives apart, in ``evaluation/``; every metric is in ``detoxrl/metrics.py``.

One concept per module (each module docstring gives the exact definition):

============================  ===========================================================================
``toxicity/``                 ``ToxicityConfig``, ``build_toxicity_scorer``: hf / detoxify / lexicon backends
``train_toxicity.py``         ``detox-train-toxicity``: the embedded MiniLM toxicity classifier
``labelled.py``               labelled toxic/neutral texts from ../shared/data, with held-out splits
``classifier.py``             ``SequenceClassifier``: batched P(label | text) from any HF classifier
``similarity.py``             ``SimilarityConfig``, ``SimilarityScorer``: cosine, source-embedding cache
``fluency.py``                ``FluencyConfig``, ``build_fluency_scorer``: calibrated LM log-prob / CoLA
``calibrate_fluency.py``      ``python -m rewards.calibrate_fluency``: the lm fluency constants
``mixing.py``                 pure reward arithmetic: weighted_sum, product, penalties
``checks.py``                 copy / empty / length blow-up checks
``composite.py``              ``RewardConfig``, ``CompositeReward``, ``RewardBreakdown``
``batching.py``               devices, length-sorted batches, CPU thread count
============================  ===========================================================================

Importing this package is cheap; models load only when a scorer is built.
"""

"""Judges and rewards: toxicity, similarity and fluency scorers, the composite reward, ``detox-eval``.

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
``judges.py``                 ``EvalJudgesConfig``, ``Judges``: STA, SIM, FL apart from the reward
``baselines.py``              the ``duplicate`` and ``delete`` systems
``systems.py``                system specs: baselines, predictions files, models and adapters
``predictions.py``            reading predictions files
``metrics.py``                ROC-AUC, accuracy, J, chrF++, length ratio (pure)
``report.py``                 the eval table, JSON and per-sentence TSV
``evaluate.py``               ``detox-eval``
``batching.py``               devices, length-sorted batches, CPU thread count
============================  ===========================================================================

Importing this package is cheap; models load only when a scorer is built.
"""

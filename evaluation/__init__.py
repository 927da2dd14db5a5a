"""How detox systems are judged, apart from how the policy is paid (``rewards/``): ``detoxrl eval``.

============================  ===========================================================================
``judges.py``                 ``EvalJudgesConfig``, ``Judges``: STA, SIM, FL apart from the reward
``baselines.py``              the ``duplicate`` and ``delete`` systems
``systems.py``                system specs: baselines, predictions files, models and adapters
``predictions.py``            reading predictions files
``report.py``                 the eval table, JSON and per-sentence TSV (metrics from ``detoxrl.metrics``)
``evaluate.py``               ``detoxrl eval`` / ``detox-eval``
============================  ===========================================================================
"""

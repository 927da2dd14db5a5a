"""Running stages together: reuse of finished stages, the one-command pipeline, the ablation grid, the CLI.

============================  ===========================================================================
``stage.py``                  ``Stage``: reuse, resume or start a stage from its output folder
``pipeline.py``               ``detoxrl pipeline``: SFT -> PPO -> eval from one preset
``ablate.py``                 ``detoxrl ablate``: the reward ablation grid
``cli.py``                    the ``detoxrl`` command: one dispatcher for every entry point
============================  ===========================================================================

Nothing below this layer (``rl/``, ``sft/``, ``rewards/``, ``evaluation/``, ``detoxrl/``) imports it.
"""

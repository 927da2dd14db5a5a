"""The embedded default toxicity classifier: where ``detox-train-toxicity`` saves it, and finding it.

``toxicity_model: detoxrl-toxicity-minilm`` (the default) means the folder
``<detoxrl cache>/models/detoxrl-toxicity-minilm`` (``$DETOXRL_CACHE``, else ``~/.cache/detoxrl``).

The two classifiers the shipped configs name (the reward's ``detoxrl-toxicity-minilm`` and the evaluation's
``detoxrl-toxicity-minilm-external``) are trained on first use when missing, exactly as ``detoxrl
train-toxicity`` would (``TRAIN_ARGS``), so ``accelerate launch rl/ppo.py`` runs on a fresh machine: a log line
says what is trained, where it goes and how long it takes, a progress bar follows, and a lock file beside the
folder makes a second process (another rank, another command) wait for the first instead of training again.
Offline this needs only the packaged MiniLM and ../shared/data. Any other ``detoxrl-toxicity-*`` name is never
trained implicitly: a missing one is a ``UserError`` giving the command to run.
"""

from __future__ import annotations

import os

from detoxrl.errors import UserError
from rewards.toxicity.config import DEFAULT_TOXICITY_MODEL, default_classifier_dir

TRAIN_COMMAND = "detoxrl train-toxicity"


def is_trained(folder: str) -> bool:
    return os.path.isfile(os.path.join(folder, "config.json")) and os.path.isfile(
        os.path.join(folder, "model.safetensors"))


def is_cache_name(ref: str) -> bool:
    """``detoxrl-toxicity-minilm`` or another ``detoxrl-toxicity-*`` name: a classifier in the detoxrl cache
    (``detox-train-toxicity --output_dir <cache>/models/<name>``), unless a local path of that name exists."""
    from detoxrl.paths import resolve_path

    return ref.startswith(DEFAULT_TOXICITY_MODEL) and "/" not in ref and "\\" not in ref and resolve_path(ref) is None


# The independent eval judge: trained like DEFAULT_TOXICITY_MODEL but without ParaDetox and from another seed
# (see configs/eval/default.yaml).
EXTERNAL_TOXICITY_MODEL = "detoxrl-toxicity-minilm-external"


# The cache classifiers trained on first use, with the flags of `detoxrl train-toxicity` that make each.
TRAIN_ARGS = {DEFAULT_TOXICITY_MODEL: [],
              EXTERNAL_TOXICITY_MODEL: ["--use_paradetox", "false", "--seed", "1"]}  # independent: no ParaDetox
TRAIN_MINUTES = 10  # on a 2-core CPU, alone (7.5 min measured on 2026-12-02)


def resolve_classifier_ref(ref: str, field: str = "toxicity_model", train_missing: bool = True) -> str:
    """``ref`` unchanged, or the cache folder for ``detoxrl-toxicity-minilm`` (and other ``detoxrl-toxicity-*``
    names). A missing folder of ``TRAIN_ARGS`` is trained now (``train_missing``) or left for first use; any other
    missing one is a ``UserError``."""
    if ref != DEFAULT_TOXICITY_MODEL and not is_cache_name(ref):
        return ref
    folder = default_classifier_dir(ref)
    if is_trained(folder):
        return folder
    if ref in TRAIN_ARGS:
        if train_missing:
            train_on_first_use(ref, folder)
        return folder
    raise UserError(f"{field}: the toxicity classifier '{ref}' is not trained yet (no model at {folder}). "
                    f"Run `{train_command(ref)}` once (about {TRAIN_MINUTES} minutes on a 2-core CPU, offline), "
                    f"or set {field} to a classifier folder or hub id, or use toxicity_backend: lexicon")


def train_argv(ref: str) -> list[str]:
    """The ``detoxrl train-toxicity`` flags that train the cache classifier ``ref``."""
    return [*TRAIN_ARGS.get(ref, []), "--output_dir", default_classifier_dir(ref)]


def train_command(ref: str) -> str:
    return " ".join([TRAIN_COMMAND, *train_argv(ref)])


def train_on_first_use(ref: str, folder: str) -> None:
    """Train the cache classifier ``ref`` into ``folder`` unless another process holds the lock (then wait for it
    and use what it trained)."""
    import logging
    import time

    log = logging.getLogger("detoxrl.rewards")
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    with _locked(folder + ".lock"):
        if is_trained(folder):  # another process trained it while this one waited
            log.info("toxicity classifier '%s': trained by another process at %s", ref, folder)
            return
        log.info("toxicity classifier '%s' is not trained yet: training it once into %s (about %d min on a 2-core "
                 "CPU; `%s` does the same ahead of time)", ref, folder, TRAIN_MINUTES, train_command(ref))
        from detoxrl.config import DetoxParser
        from detoxrl.data import DataConfig
        from rewards import train_toxicity

        import torch

        start = time.perf_counter()
        # this process's own threads (the load average it would otherwise go by still counts the stage before it),
        # and left as they were for the stage that asked; so is torch's random state (training seeds it), so a run
        # that trains the classifier on first use samples exactly as a run that finds it trained
        threads = torch.get_num_threads()
        cfg, data_cfg = DetoxParser([train_toxicity.TrainToxicityConfig, DataConfig], prog=TRAIN_COMMAND).parse(
            [*train_argv(ref), "--num_threads", str(threads)])
        try:
            with torch.random.fork_rng():
                train_toxicity.run(cfg, data_cfg)
        finally:
            torch.set_num_threads(threads)
        log.info("toxicity classifier '%s' trained in %.1f min", ref, (time.perf_counter() - start) / 60)


class _locked:
    """An exclusive ``flock`` on ``path`` for the block (a no-op where ``fcntl`` does not exist)."""

    def __init__(self, path: str):
        self.path, self.fh = path, None

    def __enter__(self):
        try:
            import fcntl
        except ImportError:  # pragma: no cover - Windows: no lock
            return self
        self.fh = open(self.path, "a+")
        fcntl.flock(self.fh, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc):
        if self.fh is not None:
            self.fh.close()  # closing releases the lock

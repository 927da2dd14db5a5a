"""detoxrl core: config parsing, model references and loading, data, prompts, toxic vocabulary.

Both training stages (``sft/``, ``rl/``) and the judges (``rewards/``) import from here; nothing
here imports a stage. Importing the package turns Hugging Face telemetry off; it configures no logging
(the commands do, ``detoxrl.log``).
"""

import os

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

__version__ = "0.1.0"

"""Semantic similarity judge: sentence-transformers cosine between the source and the output.

Definition. With ``e(x)`` the L2-normalised sentence embedding of the configured encoder,

    SIM(source, output) = clip(e(source) . e(output), 0, 1)      and 0 for an empty output

(an output with no word character has no meaning to keep; the encoder would still embed it).
``reference_similarity(outputs, references)`` is ``max_r clip(e(output) . e(r), 0, 1)`` over a
sentence's references (NaN for a sentence without any).

Encoders: the default is the packaged all-MiniLM-L6-v2 (English, served offline through the core
``resolve_model``). For other languages use ``sentence-transformers/LaBSE`` (TextDetox's SIM judge)
or ``sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2`` when the hub is reachable.

Cache. Sources (and references) repeat across PPO epochs, outputs never do, so embeddings of
sources and references are kept in an LRU cache keyed by the exact text (``similarity_cache_size``
entries, CPU float32); outputs are always encoded fresh. ``clear_cache()`` empties it.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from detoxrl.errors import UserError
from detoxrl.models.embedded import MINILM_ID
from rewards.batching import resolve_device
from rewards.checks import is_empty


@dataclass
class SimilarityConfig:
    """The similarity encoder (every field is a YAML key and a CLI flag)."""

    similarity_model: str = field(
        default=MINILM_ID,
        metadata={"help": "sentence-transformers model: hub id or folder. Default all-MiniLM-L6-v2 (packaged, "
                  "English); multilingual: sentence-transformers/LaBSE or "
                  "sentence-transformers/paraphrase-multilingual-MiniLM-L12-v2."},
    )
    similarity_batch_size: int = field(default=64, metadata={"help": "Texts per encoder batch."})
    similarity_cache_size: int = field(
        default=100_000, metadata={"help": "Source/reference embeddings kept in the LRU cache (0: no cache)."})

    def __post_init__(self):
        if not str(self.similarity_model).strip():
            raise ValueError("similarity_model is empty; give a sentence-transformers hub id or folder")
        if self.similarity_batch_size <= 0:
            raise ValueError(f"similarity_batch_size must be > 0 (got {self.similarity_batch_size})")
        if self.similarity_cache_size < 0:
            raise ValueError(f"similarity_cache_size must be >= 0 (got {self.similarity_cache_size})")


class SimilarityScorer:
    """Batched cosine similarity with a cache of source embeddings (see the module docstring)."""

    def __init__(self, cfg: SimilarityConfig, device: str | torch.device = "auto"):
        from sentence_transformers import SentenceTransformer

        from detoxrl.models.refs import resolve_model

        src = resolve_model(cfg.similarity_model, what="similarity encoder")
        self.device = resolve_device(device)
        try:
            self.model = SentenceTransformer(src.path, device=str(self.device))
        except (OSError, ValueError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UserError(f"similarity_model: '{cfg.similarity_model}' ({src.source}) failed to load as a "
                            f"sentence-transformers model: {first[:300]}") from exc
        self.model.eval()
        self.cfg = cfg
        self.name = cfg.similarity_model
        self._cache: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.cache_hits = 0

    @torch.inference_mode()
    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised embeddings ``[N, D]``, float32 on the CPU."""
        if not texts:
            dim = getattr(self.model, "get_embedding_dimension", self.model.get_sentence_embedding_dimension)()
            return torch.zeros(0, dim or 0)
        emb = self.model.encode(list(texts), batch_size=self.cfg.similarity_batch_size, convert_to_tensor=True,
                                normalize_embeddings=True, show_progress_bar=False)
        return emb.float().cpu()

    def embed_cached(self, texts: Sequence[str]) -> torch.Tensor:
        """``embed`` through the LRU cache (for sources and references)."""
        if self.cfg.similarity_cache_size == 0:
            return self.embed(texts)
        self.cache_hits += sum(1 for t in texts if t in self._cache)
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            for text, vec in zip(missing, self.embed(missing)):
                self._cache[text] = vec
        rows = []
        for t in texts:
            self._cache.move_to_end(t)
            rows.append(self._cache[t])
        while len(self._cache) > self.cfg.similarity_cache_size:
            self._cache.popitem(last=False)
        return torch.stack(rows) if rows else self.embed([])

    def clear_cache(self) -> None:
        self._cache.clear()
        self.cache_hits = 0

    def __call__(self, sources: Sequence[str], outputs: Sequence[str]) -> torch.Tensor:
        """``SIM(source_i, output_i)`` for each pair, float32 on the CPU."""
        if len(sources) != len(outputs):
            raise ValueError(f"{len(sources)} sources but {len(outputs)} outputs")
        if not outputs:
            return torch.zeros(0)
        sims = (self.embed_cached(sources) * self.embed(outputs)).sum(-1).clamp(0.0, 1.0)
        empty = torch.tensor([is_empty(o) for o in outputs])
        return sims.masked_fill(empty, 0.0)

    def reference_similarity(self, outputs: Sequence[str], references: Sequence[Sequence[str]]) -> torch.Tensor:
        """``max_r SIM(output_i, r)`` over each sentence's references (NaN where there are none)."""
        flat = [r for refs in references for r in refs]
        ref_emb = self.embed_cached(flat)
        out_emb = self.embed(outputs)
        scores, k = [], 0
        for i, refs in enumerate(references):
            if not refs:
                scores.append(math.nan)
                continue
            sims = (ref_emb[k : k + len(refs)] @ out_emb[i]).clamp(0.0, 1.0)
            scores.append(0.0 if is_empty(outputs[i]) else float(sims.max()))
            k += len(refs)
        return torch.tensor(scores, dtype=torch.float32)

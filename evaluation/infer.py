"""Inference: the ``Detoxifier`` Python API and the ``detox`` command.

    detox "you are a stupid idiot"                  # prints the rewrite (one line per input line)
    detox --input in.txt --output out.txt           # a file, line by line, in batches, progress bar
    cat in.txt | detox --batch_size 16 > out.txt    # stdin -> stdout, streamed in batches of lines
    detox --model outputs/sft/default --num_beams 4 --max_new_tokens 48 "..."
    detox --model outputs/rl/default --best_of 8 --temperature 0.7 "..."   # best-of-n (docs/best-of-n.md)

    from evaluation.infer import Detoxifier
    detox = Detoxifier.from_pretrained("outputs/sft/default")   # or a merged/ folder, hub id, smollm2
    detox("you are a stupid idiot")      # -> str
    detox(["first", "second"])           # -> list[str]

Best-of-n: ``--best_of N`` (N > 1) samples N rewrites per line (``--temperature``, ``--top_p``,
``--seed``) and keeps the one the composite reward of ``--rerank_config`` (default: the reward the run was trained
with, else ``configs/rewards/default.yaml``) scores highest (``detoxrl/rerank.py``); it is refused with
``--num_beams`` > 1. Greedy stays the default. How long reranking took against generation is logged.

Models: anything ``detoxrl.models.trained.load_trained`` takes (run folder, merged or adapter folder,
plain model folder, hub id, alias). Without ``--model`` the command uses the first trained run of
``DEFAULT_MODELS`` (PPO, then SFT) that exists. The prompt format and the decoding settings come
from the model card (``detoxrl.json``); keyword overrides and flags win over it.

Lines: each input line is one input and gives exactly one output line. A text holding newlines is
rewritten line by line; an empty or blank line gives an empty line without a model call; a newline
the model writes inside a rewrite becomes a space.

Length: an input longer than the model takes (``tokenizer.model_max_length`` or the config's
position count, less the prompt template, a 2-token margin and, for causal models,
``max_new_tokens``), or than ``max_input_length`` tokens, is cut at a token boundary before it
goes into the prompt (so the template's end is never cut), with one warning per call or stream
that says how many inputs were cut.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import typing
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field, fields, make_dataclass, replace
from itertools import islice
from typing import Literal

from detoxrl.config import DetoxParser, prog_name, run_cli
from detoxrl.devices import check_device, resolve_device, set_torch_threads
from detoxrl.errors import UserError
from detoxrl.generate import GenerationSettings, generate_rewrites
from detoxrl.rerank import Reranked, Scorer, best_of_n
from rewards.scorer import load_reward_scorer
from detoxrl.io import atomic_write_text, through_link
from detoxrl.log import setup_logging
from detoxrl.runcard import has_card
from detoxrl.models.loading import check_model_config
from detoxrl.models.runs import read_run
from detoxrl.models.trained import load_trained
from detoxrl.paths import resolve_path
from detoxrl.prompts import PromptFormatter
from detoxrl import validate
from detoxrl.validate import ENCODING_HELP, check_generation

log = logging.getLogger("evaluation.infer")

DEFAULT_MODELS = ("outputs/rl/default", "outputs/sft/default")
LIMIT_MARGIN = 2  # a text may tokenize a token or two longer inside the template than alone


FILE_CHUNK = 256  # lines of an --input file rewritten (and written out) at a time


def model_limit(model, tokenizer) -> int | None:
    """Most tokens the model takes: the smallest of the tokenizer's and the config's limits (None: no limit known)."""
    limits = [getattr(tokenizer, "model_max_length", None)]
    limits += [getattr(model.config, name, None) for name in ("max_position_embeddings", "n_positions")]
    limits = [n for n in limits if isinstance(n, int) and 0 < n < 1_000_000]  # tokenizers say 1e30 for "unknown"
    return min(limits) if limits else None


class Detoxifier:
    """Rewrites toxic text into polite text with one detox model (see the module docstring)."""

    def __init__(self, model, formatter: PromptFormatter, settings: GenerationSettings | None = None,
                 max_input_length: int | None = None, card: dict | None = None, what: str = "",
                 reranker: Scorer | None = None):
        self.model = model.eval()
        self.formatter = formatter
        self.settings = settings or GenerationSettings()
        self.max_input_length = max_input_length
        self.card = card or {}
        self.what = what
        self.reranker = reranker  # best-of-n: (sources, outputs) -> scores; needed when settings.best_of > 1
        self.last_rerank: Reranked | None = None  # the last best-of-n batch (candidates, scores, timings)

    @classmethod
    def from_pretrained(cls, path_or_id: str, device: str | None = None, dtype: str = "float32",
                        max_input_length: int | None = None, rerank_config: str | None = None,
                        reranker: Scorer | None = None, **generation_overrides) -> Detoxifier:
        """Load a model and its card.

        ``device``: None/``auto`` (CUDA if available, else CPU), ``cpu``, ``cuda:N``. ``dtype``: the weights'
        dtype (``auto``: as saved). ``max_input_length``: cut inputs to this many tokens (besides the model's
        own limit). ``generation_overrides``: ``GenerationSettings`` fields (``max_new_tokens``,
        ``num_beams``, ``do_sample``, ``temperature``, ``top_p``, ``gen_batch_size``, ``best_of``, ``seed``);
        None keeps the card's. With ``best_of`` > 1 the rewrites are reranked by ``reranker`` (any
        ``(sources, outputs) -> scores``), else by the composite reward of ``rerank_config`` (default: the reward
        the run was trained with, from its ``resolved_config.yaml``, else ``configs/rewards/default.yaml``).
        Settings are checked before anything loads.
        """
        names = {f.name for f in fields(GenerationSettings)}
        unknown = sorted(set(generation_overrides) - names)
        if unknown:
            raise TypeError(f"unknown generation setting(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
        check_generation(generation_overrides)
        overrides = {k: v for k, v in generation_overrides.items() if v is not None}
        settings = replace(read_run(path_or_id).generation(), **overrides)  # the card's, before any weights load
        try:
            check_generation(asdict(settings))
        except UserError as exc:
            raise UserError(f"model '{path_or_id}': its card's decoding with the settings given: {exc}") from None
        if settings.best_of > 1 and reranker is None:
            reranker = load_reward_scorer(rerank_config, path_or_id)
        trained = load_trained(path_or_id, dtype=dtype)
        settings = replace(trained.generation, **overrides)
        model = trained.model.to(resolve_device(device))
        return cls(model, trained.formatter, settings, max_input_length, trained.card, trained.what, reranker)

    def decoding(self) -> str:
        """The decoding in words (logs, the review page)."""
        s = self.settings
        if s.best_of > 1:
            by = getattr(self.reranker, "describe", lambda: "the reranker")()
            return f"best of {s.best_of} (temperature {s.temperature:g}, top_p {s.top_p:g}, seed {s.seed}) by {by}"
        if s.num_beams > 1:
            return f"beam search ({s.num_beams} beams)"
        if s.do_sample:
            return f"sampling (temperature {s.temperature:g}, top_p {s.top_p:g}, seed {s.seed})"
        return "greedy"

    def __call__(self, text: str | Iterable[str]) -> str | list[str]:
        """Rewrite one text (-> str) or several (-> list of the same length)."""
        if isinstance(text, str):
            return self.rewrite([text])[0]
        return self.rewrite(list(text))

    def rewrite(self, texts: list[str], progress: bool = False) -> list[str]:
        """Rewrite ``texts`` in batches (sorted by length); ``progress`` shows a bar."""
        outputs, cut, lines = self._rewrite(texts, progress)
        self._warn(cut, lines)
        return outputs

    def rewrite_stream(self, lines: Iterable[str], batch_size: int | None = None) -> Iterator[str]:
        """Yield one rewrite per line, reading and generating ``batch_size`` lines at a time
        (default ``settings.gen_batch_size``), so a long pipe gives output as it goes."""
        size = batch_size or self.settings.gen_batch_size
        lines = iter(lines)
        cut = total = 0
        while True:
            batch, error = [], None
            try:  # a line that cannot be read (not UTF-8) ends the stream after the lines before it
                for line in islice(lines, size):
                    batch.append(line.rstrip("\r\n"))
            except UserError as exc:
                error = exc
            if batch:
                outputs, batch_cut, batch_lines = self._rewrite(batch, progress=False)
                cut, total = cut + batch_cut, total + batch_lines
                yield from outputs
            if error is not None:
                self._warn(cut, total)
                raise error
            if not batch:
                break
        self._warn(cut, total)

    def input_budget(self) -> int | None:
        """Most tokens an input line may have (None: no limit known and none set)."""
        tok, fmt = self.formatter.tokenizer, self.formatter
        budget = self.max_input_length
        limit = model_limit(self.model, tok)
        if limit is not None:
            template = len(fmt.prompt_ids(""))
            new = self.settings.max_new_tokens if fmt.family == "causal" else 0
            room = limit - template - new - LIMIT_MARGIN
            if room < 1:
                raise UserError(f"the model takes {limit} tokens but the prompt template needs {template} and the "
                                f"rewrite {new}; lower max_new_tokens")
            budget = room if budget is None else min(budget, room)
        return budget

    def _rewrite(self, texts: list[str], progress: bool) -> tuple[list[str], int, int]:
        """(outputs, inputs cut, lines): every text split into lines, rewritten, joined back."""
        split = [[line.rstrip("\r") for line in text.split("\n")] for text in texts]
        lines = [line for parts in split for line in parts]
        lines, cut = self._fit(lines)
        if self.settings.best_of > 1:
            outputs = iter(self._best_of(lines, progress))
        else:
            outputs = iter(generate_rewrites(self.model, self.formatter, lines, self.settings, progress=progress))
        joined = ["\n".join(re.sub(r"\s*\n\s*", " ", next(outputs)) for _ in parts) for parts in split]
        return joined, cut, len(lines)

    def _best_of(self, lines: list[str], progress: bool) -> list[str]:
        if self.reranker is None:
            raise UserError(f"best_of {self.settings.best_of} needs a reranker: Detoxifier.from_pretrained(..., "
                            "rerank_config=...) or Detoxifier(..., reranker=...)")
        result = best_of_n(self.model, self.formatter, lines, self.settings, self.reranker, progress=progress)
        self.last_rerank = result
        total = result.generate_seconds + result.rerank_seconds
        if total:
            log.info("best of %d for %d lines: generation %.1f s, reranking %.1f s (%.0f%% of the time)",
                     self.settings.best_of, len(lines), result.generate_seconds, result.rerank_seconds,
                     100 * result.rerank_seconds / total)
        return result.outputs

    def _fit(self, lines: list[str]) -> tuple[list[str], int]:
        """``lines`` with each one cut to ``input_budget()`` tokens, and how many were cut."""
        budget = self.input_budget()
        if budget is None or not lines:
            return lines, 0
        tok = self.formatter.tokenizer
        enc = tok(lines, add_special_tokens=False, return_offsets_mapping=tok.is_fast)
        fitted, cut = list(lines), 0
        for i, ids in enumerate(enc["input_ids"]):
            if len(ids) > budget:
                end = enc["offset_mapping"][i][budget - 1][1] if tok.is_fast else None
                fitted[i] = lines[i][:end] if end is not None else tok.decode(ids[:budget])
                cut += 1
        return fitted, cut

    @staticmethod
    def _warn(cut: int, total: int) -> None:
        if cut:
            log.warning("%d of %d input lines were longer than the model's input limit and were truncated "
                        "(set max_input_length, or split long lines)", cut, total)


# ---------------------------------------------------------------------------------------------------- the command


@dataclass
class InferConfig:
    """What ``detox`` reads, writes and runs on."""

    model: str | None = field(
        default=None,
        metadata={"help": "Run folder (detox-sft / PPO output), merged or adapter folder, model folder, hub id or "
                  f"alias (smollm2). Default: the first of {', '.join(DEFAULT_MODELS)} that exists."})
    input: str | None = field(default=None, metadata={"help": "Text file to rewrite, one input per line."})
    output: str | None = field(
        default=None, metadata={"help": "Where the rewrites go, one per line, written atomically (default: stdout)."})
    batch_size: int | None = field(
        default=None, metadata={"help": "Lines per generation batch, and per streamed batch on stdin "
                                "(default: the model card's gen_batch_size; 1 when stdin is a terminal)."})
    max_input_length: int | None = field(
        default=None, metadata={"help": "Cut input lines to this many tokens (default: what fits the model)."})
    device: str = field(default="auto", metadata={"help": "auto | cpu | cuda | cuda:N."})
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = field(
        default="float32", metadata={"help": "Weights dtype (auto: as saved)."})
    num_threads: int = field(
        default=0, metadata={"help": "torch CPU threads; 0: the cores not busy at start (detoxrl.devices)."})
    encoding_errors: Literal["strict", "replace"] = field(default="strict", metadata={"help": ENCODING_HELP})
    rerank_config: str | None = field(
        default=None,
        metadata={"help": "best_of > 1: the reward config whose composite reward picks the best rewrite (unset: the "
                  "reward the model's run was trained with, else configs/rewards/default.yaml)."})

    def __post_init__(self):
        for name in ("batch_size", "max_input_length"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1 or unset (got {getattr(self, name)})")
        check_device("device", self.device)
        if self.num_threads < 0:
            raise ValueError(f"num_threads must be >= 0 (got {self.num_threads})")


def _overrides_class():
    """``GenerationSettings`` with every field optional (None: the model card's value), for the flags."""
    hints = typing.get_type_hints(GenerationSettings)
    specs = [(f.name, typing.Optional[hints[f.name]],
              field(default=None, metadata={"help": f"{f.metadata['help']} Unset: the model card's."}))
             for f in fields(GenerationSettings) if f.name != "gen_batch_size"]  # that one is --batch_size
    return make_dataclass("GenerationOverrides", specs)


GenerationOverrides = _overrides_class()


def default_model(model: str | None) -> str:
    """``model``, else the first trained run of ``DEFAULT_MODELS`` that exists."""
    if model:
        return model
    for candidate in DEFAULT_MODELS:
        path = resolve_path(candidate)
        if path and has_card(path):
            return path
    raise UserError(f"no --model given and no trained model in {' or '.join(DEFAULT_MODELS)}; train one "
                    "(detox-sft --config configs/sft/default.yaml) or pass --model (a run or model folder, a hub id, "
                    "or smollm2 for the untrained base)")


def write_lines(path: str, lines: Iterable[str]) -> None:
    """Write one line per item to ``path`` atomically (nothing is left half-written on a crash)."""
    atomic_write_text(path, "".join(f"{line}\n" for line in lines))


def rewrite_chunks(detox: "Detoxifier", lines: list[str], chunk: int = FILE_CHUNK) -> Iterator[str]:
    """The rewrites of a file's ``lines`` in input order, ``chunk`` lines at a time (each chunk length-sorted into
    batches), under one progress bar: what is done can be written before the rest is."""
    from tqdm.auto import tqdm

    cut = 0
    with tqdm(total=len(lines), desc="rewrite", unit="line", disable=len(lines) <= chunk) as bar:
        for start in range(0, len(lines), chunk):
            outputs, batch_cut, _ = detox._rewrite(lines[start:start + chunk], progress=False)
            cut += batch_cut
            yield from outputs
            bar.update(len(outputs))
    detox._warn(cut, len(lines))


def write_as_done(path: str, outputs: Iterable[str], resume_hint: str) -> int:
    """Write ``outputs`` to ``path`` one line at a time through ``<path>.partial``, renamed to ``path`` when all are
    written; returns the count. Interrupted (Ctrl-C) or failing (a full disk), the lines written so far stay in
    ``<path>.partial`` and the error says so; ``resume_hint`` says how to do the rest."""
    path = through_link(path)
    partial, done = path + ".partial", 0
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    try:
        with open(partial, "w", encoding="utf-8") as fh:
            for line in outputs:
                fh.write(f"{line}\n")
                fh.flush()
                done += 1
            os.fsync(fh.fileno())
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"the first {done} rewrites are in '{partial}' (line i answers input line i); "
                                f"{resume_hint.format(next=done + 1)}") from None
    except OSError as exc:
        raise UserError(f"--output '{path}': writing failed after {done} lines ({exc.strerror}); those lines are in "
                        f"'{partial}'; free space or pick another path, then {resume_hint.format(next=done + 1)}"
                        ) from None
    os.replace(partial, path)
    return done


def _main(args: list[str] | None) -> None:
    setup_logging()
    parser = DetoxParser([InferConfig, GenerationOverrides], prog="detox")
    parser.add_argument("text", nargs="*", help="Texts to rewrite. Without texts and --input: lines from stdin.")
    cfg, overrides, rest = parser.parse(args)
    if rest.text and cfg.input:
        raise UserError("give texts or --input, not both")
    settings = {k: v for k, v in asdict(overrides).items() if v is not None}
    if cfg.batch_size:
        settings["gen_batch_size"] = cfg.batch_size
    try:
        validate.check_generation(settings)
    except UserError as exc:
        raise UserError(f"{prog_name('detox')}: --{exc}") from None
    if cfg.output:  # before any work, so no rewrite is thrown away at the end
        validate.check_output_file(cfg.output, "--output")
    lines = validate.read_lines(cfg.input, f"--input '{cfg.input}'", cfg.encoding_errors) if cfg.input else None
    check_model_config(default_model(cfg.model))
    set_torch_threads(cfg.num_threads)
    detox = Detoxifier.from_pretrained(default_model(cfg.model), device=cfg.device, dtype=cfg.dtype,
                                       max_input_length=cfg.max_input_length, rerank_config=cfg.rerank_config,
                                       **settings)
    if detox.settings.best_of > 1:
        log.info("decoding: %s", detox.decoding())
    hint = "rewrite the rest with `tail -n +{next} %s | detoxrl rewrite ...`" % (cfg.input or "<input>")
    if lines is not None:
        outputs: Iterable[str] = rewrite_chunks(detox, lines)
    elif rest.text:
        outputs = detox.rewrite(rest.text)
    else:
        interactive = sys.stdin.isatty()
        if interactive:
            log.info("reading lines from the terminal (Ctrl-D ends)")
        raw = getattr(sys.stdin, "buffer", None)  # bytes, decoded here so a bad byte names its line
        stdin = sys.stdin if raw is None else validate.decode_lines(raw, "stdin", cfg.encoding_errors)
        outputs = detox.rewrite_stream(stdin, cfg.batch_size or (1 if interactive else None))
    if cfg.output:
        log.info("wrote %d lines to %s", write_as_done(cfg.output, outputs, hint), cfg.output)
        return
    done = 0
    try:
        for line in outputs:
            print(line, flush=True)
            done += 1
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"{done} rewrites were printed; {hint.format(next=done + 1)}") from None


def main(args: list[str] | None = None) -> int:
    """Entry point of ``detox``; returns the exit code (2 with one line on stderr for user errors)."""
    return run_cli(_main, args)


if __name__ == "__main__":
    sys.exit(main())

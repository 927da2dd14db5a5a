"""Tests of detoxrl.data: every loader, the cleaning rules and report, the grouped split, the errors, the CLI."""

from __future__ import annotations

import json
import logging
import time

import pytest

from detoxrl.config import DetoxParser
from detoxrl.data import (
    CleanReport,
    DataConfig,
    Pair,
    clean_pairs,
    clean_text,
    load_detox_data,
    load_raw_pairs,
    norm_key,
    read_instruction_json,
    read_multilingual,
    read_paradetox,
    read_paranmt,
    split_pairs,
    subsample,
    write_instruction_json,
)
from detoxrl.data.cli import main
from detoxrl.errors import ConfigError, UserError
from detoxrl.paths import PROJECT_ROOT, resolve_path

PARADETOX_TSV = (
    "toxic\tneutral1\tneutral2\tneutral3\n"
    "you are a fucking idiot .\tyou are wrong.\t\t\n"  # line 2: 1 pair
    '"this shit\nis bad"\tthis is bad\t"this\nis not good"\t\n'  # lines 3-5: 2 pairs, quoted newlines
    "what the hell ?\twhat?\tWhat is it?\tWhat happened?\n"  # line 6: 3 pairs
    "\tno source here\t\t\n"  # line 7: empty toxic -> skipped
    "only toxic\t\t\t\n"  # line 8: no neutral -> skipped
    "a\tb\n"  # line 9: 2 cells -> skipped
)


def write(tmp_path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.fixture
def warnings(caplog):
    caplog.set_level(logging.WARNING, logger="detoxrl.data")
    return caplog


# ---------------------------------------------------------------- ParaDetox


def test_paradetox_quoted_newlines_and_empty_slots(tmp_path, warnings):
    path = write(tmp_path, "p.tsv", PARADETOX_TSV)
    pairs = read_paradetox(path)
    assert len(pairs) == 6
    assert [(p.source, p.target) for p in pairs[1:3]] == [
        ("this shit\nis bad", "this is bad"), ("this shit\nis bad", "this\nis not good")]
    assert [p.origin for p in pairs] == [f"{path}:2", f"{path}:3", f"{path}:3"] + [f"{path}:6"] * 3
    assert {p.lang for p in pairs} == {"en"}
    assert pairs[3].group == pairs[5].group == "what the hell"
    messages = [r.getMessage() for r in warnings.records]
    assert len(messages) == 3
    assert f"{path}:7" in messages[0] and "empty 'toxic'" in messages[0]
    assert f"{path}:8" in messages[1] and "no neutral" in messages[1]
    assert f"{path}:9" in messages[2] and "2 cells" in messages[2]


def test_ruparadetox_layout_with_index_column(tmp_path):
    path = write(tmp_path, "ru.tsv", "index\ttoxic_comment\tneutral_comment1\tneutral_comment2\tneutral_comment3\n"
                 "0\tты дурак\tты неправ\tты ошибаешься\t\n1\tиди нафиг\tуходи\t\t\n")
    pairs = read_paradetox(path)
    assert [(p.source, p.target, p.lang) for p in pairs] == [
        ("ты дурак", "ты неправ", "ru"), ("ты дурак", "ты ошибаешься", "ru"), ("иди нафиг", "уходи", "ru")]
    assert read_paradetox(path, lang="xx")[0].lang == "xx"


REAL_PARADETOX = resolve_path("../shared/data/paradetox/paradetox.tsv")


@pytest.mark.skipif(REAL_PARADETOX is None, reason="shared data folder ../shared/data/paradetox is not present "
                    "(set DETOXRL_DATA_DIR to a copy to run this test)")
def test_real_paradetox_counts():
    raw, source, fmt = load_raw_pairs(DataConfig())
    assert (source, fmt) == (REAL_PARADETOX, "paradetox")
    assert len({p.origin for p in raw}) == 11_927 and len({p.group for p in raw}) == 11_927
    assert len(raw) == 19_743
    data = load_detox_data(DataConfig())
    assert data.clean_report.as_dict() == {
        "loaded": 19_743, "dropped_empty": 0, "dropped_identical": 151, "dropped_duplicates": 652, "kept": 18_940}
    assert (len(data.train), len(data.dev)) == (17_982, 958)
    assert len({p.group for p in data.dev}) == 591  # round(0.05 * 11,824 groups left after cleaning)
    assert not {p.group for p in data.train} & {p.group for p in data.dev}


# ---------------------------------------------------------------- ParaNMT

PARANMT_TSV = (
    "\treference\ttranslation\tsimilarity\tlenght_diff\tref_tox\ttrn_tox\n"
    "0\tyou are a damn fool\tyou are unwise\t0.8\t0.1\t0.95\t0.01\n"  # kept as is
    "1\tthat is rude\tshut up, you moron\t0.7\t0.2\t0.05\t0.98\n"  # kept, flipped: translation is toxic
    "2\tkind of bad\tnot good\t0.7\t0.1\t0.85\t0.01\n"  # toxic side 0.85 <= 0.9
    "3\tgo to hell\tgo away, jerk\t0.7\t0.1\t0.99\t0.5\n"  # neutral side 0.5 >= 0.2
    "4\tx\ty\t0.7\t0.1\tn/a\t0.1\n"  # not a number -> warning
)


def test_paranmt_orientation_and_thresholds(tmp_path, warnings):
    path = write(tmp_path, "filtered.tsv", PARANMT_TSV)
    pairs = read_paranmt(path)
    assert [(p.source, p.target) for p in pairs] == [
        ("you are a damn fool", "you are unwise"), ("shut up, you moron", "that is rude")]
    assert [p.origin for p in pairs] == [f"{path}:2", f"{path}:3"]
    assert any(f"{path}:6" in r.getMessage() for r in warnings.records)
    assert [p.source for p in read_paranmt(path, toxic_threshold=0.8)][-1] == "kind of bad"
    assert [p.source for p in read_paranmt(path, neutral_threshold=0.6)][-1] == "go to hell"
    with pytest.raises(UserError, match="no row passed the ParaNMT filters"):
        read_paranmt(path, toxic_threshold=1.0)


def test_paranmt_auto_detected(tmp_path):
    path = write(tmp_path, "filtered.tsv", PARANMT_TSV)
    pairs, _, fmt = load_raw_pairs(DataConfig(dataset=path))
    assert fmt == "paranmt" and len(pairs) == 2


# ---------------------------------------------------------------- instruction JSON / JSONL

PAIRS = [Pair("you are dumb", "you are wrong"), Pair("shut up", "please stop", origin="x:1"),
         Pair("what the hell", "what — “really”?")]


@pytest.mark.parametrize("name", ["out.json", "out.jsonl"])
def test_instruction_round_trip(tmp_path, name):
    path = str(tmp_path / name)
    write_instruction_json(PAIRS, path, instruction="Be nice.")
    back = read_instruction_json(path)
    assert [(p.source, p.target, p.lang) for p in back] == [(p.source, p.target, "en") for p in PAIRS]
    text = (tmp_path / name).read_text(encoding="utf-8")
    first = json.loads(text.splitlines()[0]) if name.endswith(".jsonl") else json.loads(text)[0]
    assert first == {"instructions": "Be nice.", "inputs": "you are dumb", "outputs": "you are wrong"}
    assert "“really”" in text  # written as UTF-8, not \u escapes
    assert [p.origin for p in back][1] == (f"{path}:2" if name.endswith(".jsonl") else f"{path}[1]")


def test_instruction_json_parallel_lists(tmp_path):
    path = write(tmp_path, "d.json", json.dumps(
        {"instructions": ["i", "i"], "inputs": ["a b", "c d"], "outputs": ["e f", "g h"]}))
    assert [(p.source, p.target) for p in read_instruction_json(path)] == [("a b", "e f"), ("c d", "g h")]


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    good = json.dumps({"instructions": "i", "inputs": "a", "outputs": "b"})
    path = write(tmp_path, "bad.jsonl", f"{good}\n{{\"inputs\": \"a\", \n{good}\n")
    with pytest.raises(UserError, match=rf"{path}:2: malformed JSON line"):
        read_instruction_json(path)
    path = write(tmp_path, "bad.json", '[\n {"inputs": "a", "outputs": "b"},\n {"inputs": }\n]')
    with pytest.raises(UserError, match=rf"{path}:3: malformed JSON"):
        read_instruction_json(path)


def test_instruction_missing_key(tmp_path):
    path = write(tmp_path, "m.jsonl", json.dumps({"instructions": "i", "input": "a", "outputs": "b"}) + "\n")
    with pytest.raises(UserError, match=r"m.jsonl:1: missing column 'inputs'.*'input'"):
        read_instruction_json(path)


# ---------------------------------------------------------------- multilingual

MULTI_TSV = (
    "lang\ttoxic_sentence\tneutral_sentence\tsource\n"
    "de\tdu Idiot\tdu liegst falsch\trepo:a\n"
    "es\teres un idiota\testás equivocado\trepo:b\n"
    "de\twas für ein Scheiß\twas für ein Unsinn\trepo:a\n"
)


def test_multilingual_lang_filter(tmp_path):
    path = write(tmp_path, "m.tsv", MULTI_TSV)
    assert [(p.source, p.lang) for p in read_multilingual(path, "de")] == [
        ("du Idiot", "de"), ("was für ein Scheiß", "de")]
    assert [p.lang for p in read_multilingual(path)] == ["de", "es", "de"]
    with pytest.raises(UserError, match="no rows with lang 'fr'; languages found: de, es"):
        read_multilingual(path, "fr")
    pairs, _, fmt = load_raw_pairs(DataConfig(dataset=path, lang="es"))
    assert fmt == "multilingual" and [p.target for p in pairs] == ["estás equivocado"]


# ---------------------------------------------------------------- cleaning


def test_clean_text_rules():
    assert clean_text("i don 't  care ,\nreally .") == "i don't care, really."
    assert clean_text("i do n't know ( maybe ) 5 %") == "i don't know ( maybe) 5%"
    assert clean_text("no!!!! way ! ! ! so.....", detok=False) == "no! way ! so..."
    assert clean_text("laugh ! ! ! ok ?!") == "laugh! ok?!"
    assert clean_text("ok.. then .5 left") == "ok.. then .5 left"
    assert clean_text("i don 't  care ,\nreally .", detok=False, collapse=False) == "i don 't care , really ."
    assert clean_text("wow !!!", detok=False, collapse=False) == "wow !!!"
    assert norm_key("Don't, YOU   dare!") == "don t you dare"


def _clean(pairs, **kw):
    kept, report = clean_pairs(pairs, **kw)
    return [(p.source, p.target) for p in kept], report


def test_clean_pairs_options_and_report():
    pairs = [
        Pair("you suck !!!", "you are not good!"),
        Pair("you suck !!!", "you are not good !"),  # duplicate once detokenised
        Pair("You are dumb .", "you are dumb"),  # identical after normalisation
        Pair("shut up", " ... "),  # empty: no word character
        Pair("damn it", "oh no"),
    ]
    kept, report = _clean(pairs)
    assert kept == [("you suck!", "you are not good!"), ("damn it", "oh no")]
    assert report == CleanReport(loaded=5, dropped_empty=1, dropped_identical=1, dropped_duplicates=1, kept=2)
    assert report.format() == ("loaded 5 pairs; dropped 1 empty, 1 identical (output == input), 1 duplicates; "
                               "kept 2")
    assert report.as_dict()["kept"] == 2

    kept, report = _clean(pairs, drop_identical=False)
    assert ("You are dumb.", "you are dumb") in kept and report.dropped_identical == 0 and report.kept == 3
    kept, report = _clean(pairs, deduplicate=False)
    assert kept.count(("you suck!", "you are not good!")) == 2 and report.dropped_duplicates == 0
    kept, report = _clean(pairs, detok=False)  # "good!" and "good !" now differ
    assert ("you suck !", "you are not good !") in kept and report.dropped_duplicates == 0
    kept, report = _clean(pairs, detok=False, collapse=False)
    assert kept[0] == ("you suck !!!", "you are not good!") and report.kept == 3


def test_cleaning_flags_reach_load_detox_data(tmp_path):
    path = write(tmp_path, "p.tsv", "toxic\tneutral1\tneutral2\n"
                 "i don 't care , idiot\ti don't care\ti don 't care\n"
                 "you moron !!!\tyou moron!\tplease stop!!\n"
                 "what the hell\twhat is it\t\n")
    data = load_detox_data(DataConfig(dataset=path, dev_size=1))
    assert data.clean_report.as_dict() == {
        "loaded": 5, "dropped_empty": 0, "dropped_identical": 1, "dropped_duplicates": 1, "kept": 3}
    assert sorted(p.target for p in data.all) == ["i don't care", "please stop!", "what is it"]
    data = load_detox_data(DataConfig(dataset=path, dev_size=1, detokenize=False, collapse_repeats=False,
                                      drop_identical=False, deduplicate=False))
    assert data.clean_report.kept == 5 and "please stop!!" in {p.target for p in data.all}


# ---------------------------------------------------------------- split


def _pairs(n_groups: int) -> list[Pair]:
    return [Pair(f"toxic sentence {g}", f"neutral {g}.{k}") for g in range(n_groups) for k in range(g % 3 + 1)]


def test_grouped_split_is_disjoint_and_deterministic():
    pairs = _pairs(100)
    train, dev = split_pairs(pairs, 0.1, seed=1)
    assert len({p.group for p in dev}) == 10 and len({p.group for p in train}) == 90
    assert not {p.group for p in train} & {p.group for p in dev}
    assert len(train) + len(dev) == len(pairs)
    for group in {p.group for p in dev}:  # every paraphrase of a dev source is in dev
        assert sum(p.group == group for p in pairs) == sum(p.group == group for p in dev)
    assert split_pairs(pairs, 0.1, seed=1) == (train, dev)
    assert split_pairs(list(reversed(pairs)), 0.1, seed=1)[1] == list(reversed(dev))  # order-independent
    assert {p.group for p in split_pairs(pairs, 0.1, seed=2)[1]} != {p.group for p in dev}
    assert len({p.group for p in split_pairs(pairs, 7, seed=1)[1]}) == 7  # >= 1: a count of groups
    with pytest.raises(UserError, match="only 100 source sentences"):
        split_pairs(pairs, 100, seed=1)


def test_group_is_normalised_source():
    train, dev = split_pairs([Pair("You idiot!", "a"), Pair("you idiot", "b"), Pair("other", "c")], 1, seed=0)
    assert {len(train), len(dev)} == {1, 2}  # the two spellings of one source stay together


def test_max_train_pairs_subsample(tmp_path):
    pairs = _pairs(50)
    sub = subsample(pairs, 10, seed=3)
    assert len(sub) == 10 and sub == subsample(pairs, 10, seed=3) and sub != subsample(pairs, 10, seed=4)
    assert sub == [p for p in pairs if p in sub]  # input order kept
    assert subsample(pairs, None, seed=3) is pairs
    path = str(tmp_path / "d.jsonl")
    write_instruction_json(pairs, path)
    data = load_detox_data(DataConfig(dataset=path, max_train_pairs=20, dev_size=5))
    assert len(data.train) == 20 and data.train_before_subsample > 20 and len({p.group for p in data.dev}) == 5


# ---------------------------------------------------------------- errors


def test_missing_file_names_paths_tried(tmp_path):
    with pytest.raises(UserError, match=r"dataset file 'nope/data\.tsv' not found \(tried .*nope/data\.tsv"):
        load_raw_pairs(DataConfig(dataset="nope/data.tsv"))


def test_missing_column_names_file_column_and_found(tmp_path):
    path = write(tmp_path, "x.tsv", "toxic\tneutral\nabc\tdef\n")
    with pytest.raises(UserError, match=rf"{path}: missing column 'neutral1' .*columns found: 'toxic', 'neutral'"):
        load_raw_pairs(DataConfig(dataset=path, dataset_format="paradetox"))
    with pytest.raises(UserError, match=r"cannot tell the dataset format .*set dataset_format"):
        load_raw_pairs(DataConfig(dataset=path))


def test_zero_usable_rows(tmp_path, warnings):
    path = write(tmp_path, "z.tsv", "toxic\tneutral1\n\tonly neutral\nonly toxic\t\n")
    with pytest.raises(UserError, match=rf"{path}: no usable rows \(2 read, 2 skipped"):
        read_paradetox(path)
    path = write(tmp_path, "h.tsv", "toxic\tneutral1\n")
    with pytest.raises(UserError, match="no usable rows"):
        read_paradetox(path)


def test_unknown_hub_id_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(UserError) as err:
        load_raw_pairs(DataConfig(dataset="detoxrl-test/no-such-dataset"))
    assert time.perf_counter() - start < 60  # fails fast offline instead of waiting on the network
    message = str(err.value)
    assert "'detoxrl-test/no-such-dataset'" in message and "Hugging Face Hub" in message
    assert "no local file exists at" in message and f"{PROJECT_ROOT}/detoxrl-test/no-such-dataset" in message
    assert "../shared/data/paradetox/paradetox.tsv" in message and "\n" not in message


def test_hub_dataset_columns_detected(monkeypatch):
    import datasets

    fake = datasets.Dataset.from_dict({"en_toxic_comment": ["you suck", ""], "en_neutral_comment": ["no", "x"]})
    monkeypatch.setattr(datasets, "load_dataset", lambda name, split: fake)
    monkeypatch.setattr("detoxrl.data.loaders.hub_reachable", lambda: True)  # pretend we are online
    pairs, source, fmt = load_raw_pairs(DataConfig(dataset="s-nlp/paradetox"))
    assert (source, fmt) == ("s-nlp/paradetox", "hub")
    assert [(p.source, p.target, p.origin) for p in pairs] == [("you suck", "no", "s-nlp/paradetox[train]:1")]
    cfg = DataConfig(dataset="s-nlp/paradetox", dataset_format="hub", source_column="en_neutral_comment",
                     target_column="en_toxic_comment")
    assert [(p.source, p.target) for p in load_raw_pairs(cfg)[0]] == [("no", "you suck")]  # ("x", "") skipped
    with pytest.raises(UserError, match="missing column 'nope'"):
        load_raw_pairs(DataConfig(dataset="a/b", source_column="nope", target_column="en_toxic_comment"))


# ---------------------------------------------------------------- config and CLI


def test_dataconfig_validation():
    with pytest.raises(ValueError, match="toxic_threshold must be in"):
        DataConfig(toxic_threshold=1.5)
    with pytest.raises(ValueError, match="dev_size must be > 0"):
        DataConfig(dev_size=0)
    with pytest.raises(ValueError, match="source_column and target_column"):
        DataConfig(source_column="a")


def test_parser_rejects_bad_format_in_yaml(tmp_path):
    config = write(tmp_path, "bad.yaml", "dataset: x.tsv\ndataset_format: excel\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*dataset_format.*invalid choice: 'excel'"):
        DetoxParser([DataConfig], prog="detox-data").parse(["--config", config])
    config = write(tmp_path, "bad2.yaml", "neutral_threshold: 2\n")
    with pytest.raises(ConfigError, match=r"bad2\.yaml: neutral_threshold must be in \[0, 1\]"):
        DetoxParser([DataConfig], prog="detox-data").parse(["--config", config])


@pytest.mark.parametrize("name", ["paradetox.yaml", "multilingual.yaml"])
def test_shipped_configs_parse(name):
    (cfg,) = DetoxParser([DataConfig], prog="detox-data").parse(["--config", f"{PROJECT_ROOT}/configs/data/{name}"])
    assert cfg.dataset.startswith("../shared/data/")


def test_cli_export_and_preview(tmp_path, capsys):
    data = write(tmp_path, "p.tsv", PARADETOX_TSV)
    config = write(tmp_path, "c.yaml", f"dataset: {data}\ndev_size: 1\n")
    exported = {}
    for split in ("train", "dev"):
        out = tmp_path / f"{split}.jsonl"
        assert main(["export", "--config", config, "--output", str(out), "--split", split]) == 0
        exported[split] = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert main(["export", "--config", config, "--output", str(tmp_path / "all.json")]) == 0  # --split all
    everything = json.loads((tmp_path / "all.json").read_text(encoding="utf-8"))
    assert set(everything[0]) == {"instructions", "inputs", "outputs"}
    assert len(everything) == 6
    assert sorted(map(str, everything)) == sorted(map(str, exported["train"] + exported["dev"]))
    # dev_size 1 = one source group; with seed 42 the sha256 ranking puts the 1-pair group in dev.
    assert [r["inputs"] for r in exported["dev"]] == ["you are a fucking idiot."]
    assert len(exported["train"]) == 5
    capsys.readouterr()
    assert main(["preview", "--config", config, "--samples", "2"]) == 0
    printed = capsys.readouterr().out
    assert "raw: 6 pairs from 3 source sentences" in printed
    assert "loaded 6 pairs; dropped 0 empty, 0 identical (output == input), 0 duplicates; kept 6" in printed
    assert "train: 5 pairs (2 sources)" in printed and "dev: 1 pairs (1 sources)" in printed
    assert printed.count("toxic:") == 2


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["export", "--dataset", str(tmp_path / "none.tsv"), "--output", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: dataset file") and "\n" not in err
    assert main(["export", "--dataset", str(tmp_path / "none.tsv")]) == 2
    assert "--output PATH is required" in capsys.readouterr().err
    assert main(["frobnicate"]) == 2
    assert main([]) == 0 and "usage: detox-data" in capsys.readouterr().out


# ---------------------------------------------------------------- pinned splits (instruction JSON 'split')


def test_pinned_pairs_go_to_their_split_and_dev_never_shares_a_train_source(tmp_path):
    free = _pairs(40)
    pinned = [Pair("pinned train a", "t a", split="train"), Pair("pinned train b", "t b", split="train"),
              Pair("pinned dev c", "d c", split="dev"),
              Pair("pinned dev c", "d c2", split="train"),  # same source pinned to train: leaves dev
              Pair(free[0].source, "trained version", split="train")]  # a free source pinned to train
    train, dev = split_pairs(free + pinned, 0.25, seed=1)
    train_groups, dev_groups = {p.group for p in train}, {p.group for p in dev}
    assert not train_groups & dev_groups
    assert all(p in train for p in pinned if p.split == "train")
    assert not any(p.source == "pinned dev c" for p in dev)  # its group has a train pair
    # free pairs split exactly as without the pins, except the group pinned to train leaves dev
    free_train, free_dev = split_pairs(free, 0.25, seed=1)
    assert [p for p in dev if not p.split] == [p for p in free_dev if p.group != free[0].group]
    # all pairs pinned: no ranking, no 'no training data' error
    only = [Pair("a x", "b", split="train"), Pair("c y", "d", split="dev")]
    assert split_pairs(only, 0.05, seed=0) == ([only[0]], [only[1]])
    with pytest.raises(ValueError, match="Pair.split"):
        Pair("a", "b", split="test")


def test_pinned_split_round_trips_and_survives_subsampling(tmp_path):
    pairs = [Pair(f"free source {i}", f"free target {i}") for i in range(30)]
    pinned = [Pair(f"pinned source {i}", f"pinned target {i}", split="train") for i in range(5)]
    pinned.append(Pair("pinned dev source", "pinned dev target", split="dev"))
    path = str(tmp_path / "d.jsonl")
    write_instruction_json(pairs + pinned, path)
    records = [json.loads(line) for line in open(path, encoding="utf-8")]
    assert "split" not in records[0] and records[30]["split"] == "train" and records[-1]["split"] == "dev"
    data = load_detox_data(DataConfig(dataset=path, dev_size=3, max_train_pairs=4))
    assert [p.source for p in data.train if p.split] == [f"pinned source {i}" for i in range(5)]
    assert sum(1 for p in data.train if not p.split) == 4  # only free pairs are subsampled
    assert [p.source for p in data.dev if p.split] == ["pinned dev source"]
    assert sum(1 for p in data.dev if not p.split) >= 3  # 3 free dev groups


def test_bad_pinned_split_value_names_the_record(tmp_path):
    path = write(tmp_path, "d.jsonl", '{"inputs": "a b", "outputs": "c d", "split": "test"}\n')
    with pytest.raises(UserError, match=r"d.jsonl:1: 'split' is 'test'; use train or dev"):
        read_instruction_json(path)

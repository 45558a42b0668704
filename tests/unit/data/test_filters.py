"""Every filter rule on worked examples at and just past its threshold (published defaults where the
example can be built exactly; otherwise the measured ratio is used as the threshold)."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from orchestrator.config.data_prep import (C4Config, FineWebConfig, GopherQualityConfig, GopherRepetitionConfig,
                                           LanguageConfig)
from orchestrator.data import filters
from orchestrator.data.filters import compile_phrases, duplicate_ngram_chars, duplicates, top_ngram_chars

GQ = GopherQualityConfig()


def uniq_words(n: int, seed: int = 0, length: tuple[int, int] = (4, 7)) -> list[str]:
    rng = random.Random(seed)
    out: set[str] = set()
    while len(out) < n:
        out.add("".join(rng.choice("bcdfghjklmnpqrstvwxz") for _ in range(rng.randint(*length))))
    return sorted(out, key=lambda w: rng.random())


def doc(n_words: int, stop: int = 2) -> str:
    """n_words words, ``stop`` of them Gopher stop words, all words of length 3."""
    return " ".join(["the"] * stop + ["cat"] * (n_words - stop))


# ----- Gopher quality (defaults are the published thresholds) ------------------------------------

def test_published_defaults():
    assert (GQ.min_doc_words, GQ.max_doc_words, GQ.min_avg_word_length, GQ.max_avg_word_length) == (50, 100_000, 3, 10)
    assert (GQ.max_symbol_word_ratio, GQ.max_bullet_lines_ratio, GQ.max_ellipsis_lines_ratio) == (0.1, 0.9, 0.3)
    assert (GQ.min_alpha_words_ratio, GQ.min_stop_words) == (0.8, 2)
    r = GopherRepetitionConfig()
    assert (r.dup_line_frac, r.dup_para_frac, r.dup_line_char_frac, r.dup_para_char_frac) == (0.3, 0.3, 0.2, 0.2)
    assert dict(zip(r.top_ngram_sizes, r.top_ngram_max_fracs)) == {2: 0.2, 3: 0.18, 4: 0.16}
    assert dict(zip(r.dup_ngram_sizes, r.dup_ngram_max_fracs)) == {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}
    f = FineWebConfig()
    assert (f.line_punct_thr, f.short_line_thr, f.short_line_length, f.char_duplicates_ratio, f.new_line_ratio) == (
        0.12, 0.67, 30, 0.01, 0.3)


def test_gopher_word_count_bounds():
    assert filters.gopher_quality(doc(50), GQ).keep
    assert filters.gopher_quality(doc(49), GQ).reason == "gopher_short_doc"
    assert filters.gopher_quality(doc(100_000), GQ).keep
    assert filters.gopher_quality(doc(100_001), GQ).reason == "gopher_long_doc"
    # punctuation tokens are not words
    assert filters.gopher_quality(doc(49) + " . , !", GQ).reason == "gopher_short_doc"


def test_gopher_mean_word_length_bounds():
    assert filters.gopher_quality(doc(50), GQ).stats["gopher_mean_word_length"] == 3.0  # exactly 3: kept
    short = " ".join(["the", "the"] + ["cat"] * 47 + ["at"])
    assert filters.gopher_quality(short, GQ).reason == "gopher_below_avg_word_length"
    # 2 stop words (6 chars) + 34 ten-letter + 14 eleven-letter words = 500 chars / 50 words = 10.0
    ten, eleven = "abcdefghij", "abcdefghijk"
    exact = " ".join(["the", "the"] + [ten] * 34 + [eleven] * 14)
    v = filters.gopher_quality(exact, GQ)
    assert v.keep and v.stats["gopher_mean_word_length"] == 10.0
    assert filters.gopher_quality(exact + "k", GQ).reason == "gopher_above_avg_word_length"


@pytest.mark.parametrize("symbol,reason", [(" #", "gopher_too_many_hashes"), (" ...", "gopher_too_many_ellipsis"),
                                           (" \u2026", "gopher_too_many_ellipsis")])
def test_gopher_symbol_ratio(symbol, reason):
    # symbols first: a line *ending* in an ellipsis is the ellipsis-lines rule
    assert filters.gopher_quality(symbol * 5 + " " + doc(50), GQ).keep  # 5 / 50 = 0.1
    assert filters.gopher_quality(symbol * 6 + " " + doc(50), GQ).reason == reason


def test_gopher_bullet_lines():
    lines = ["the house stood beside the quiet river with the garden"] * 10
    nine = "\n".join(["\u2022 " + ln for ln in lines[:9]] + lines[9:])
    assert filters.gopher_quality(nine, GQ).keep  # 9/10 = 0.9
    assert filters.gopher_quality("\n".join("- " + ln for ln in lines), GQ).reason == "gopher_too_many_bullets"


def test_gopher_ellipsis_lines():
    lines = ["the house stood beside the quiet river with the garden"] * 10
    three = "\n".join([ln + "..." for ln in lines[:3]] + lines[3:])
    assert filters.gopher_quality(three, GQ).keep  # 3/10
    four = "\n".join([ln + "\u2026" for ln in lines[:4]] + lines[4:])
    assert filters.gopher_quality(four, GQ).reason == "gopher_too_many_end_ellipsis"


def test_gopher_alpha_words():
    assert filters.gopher_quality(" ".join(["the", "the"] + ["cat"] * 38 + ["123"] * 10), GQ).keep  # 40/50
    assert filters.gopher_quality(" ".join(["the", "the"] + ["cat"] * 37 + ["123"] * 11), GQ).reason == \
        "gopher_below_alpha_threshold"


def test_gopher_stop_words():
    assert filters.gopher_quality(doc(50, stop=2), GQ).keep
    assert filters.gopher_quality(doc(50, stop=1), GQ).reason == "gopher_few_stop_words"
    assert filters.gopher_quality(doc(50, stop=0).replace("cat", "The", 2), GQ).keep  # case-insensitive


# ----- Gopher repetition ---------------------------------------------------------------------------

def test_repetition_helpers_worked_examples():
    assert duplicates(["a", "bb", "a", "bb", "a"]) == (3, 4)
    # "x y" occurs 3 times: 2 chars * 3
    assert top_ngram_chars("x y x y x y z".split(), 2) == 6
    assert top_ngram_chars(["a"], 2) == 0
    # words a b c a b c: the second "a b c" is a repeated 3-gram covering 3 words of 1 char
    assert duplicate_ngram_chars("a b c a b c".split(), 3) == 3
    # overlapping repeats count each word once: a a a a -> 2-grams (a a) x3, positions 1..3 covered
    assert duplicate_ngram_chars("aa aa aa aa".split(), 2) == 6


def _rep(text: str, **overrides) -> filters.Verdict:
    return filters.gopher_repetition(text, replace(GopherRepetitionConfig(), **overrides))


def test_dup_paragraph_fraction_at_published_threshold():
    ws = uniq_words(400)
    paras = [" ".join(ws[i * 40:(i + 1) * 40]) for i in range(7)] + ["short repeated para"] * 3
    # 10 paragraphs, 2 repeats -> 0.2; add one more repeat of it -> 3/11 ok; 4 repeats of 11 -> removed
    assert _rep("\n\n".join(paras)).keep
    text = "\n\n".join(paras[:7] + ["short repeated para"] * 4)  # 3 duplicates of 11 = 0.27 kept
    assert _rep(text).keep
    text = "\n\n".join(paras[:6] + ["short repeated para"] * 4)  # 3 of 10 = 0.3 kept
    assert _rep(text).keep
    text = "\n\n".join(paras[:6] + ["short repeated para"] * 5)  # 4 of 11 = 0.36 removed
    assert _rep(text).reason == "gopher_rep_dup_para_frac"


@pytest.mark.parametrize("rule,stat_key,reason", [
    ("dup_para_char_frac", None, "gopher_rep_dup_para_char_frac"),
    ("dup_line_char_frac", None, "gopher_rep_dup_line_char_frac"),
])
def test_duplicate_char_fractions(rule, stat_key, reason):
    ws = uniq_words(200, seed=1)
    body = " ".join(ws[:100])
    repeated = " ".join(ws[100:140])
    sep = "\n\n" if "para" in rule else "\n"
    text = sep.join([body, repeated, repeated, " ".join(ws[140:])])
    frac = len(repeated) / len(text)
    off = {"dup_para_char_frac": 1.0, "dup_line_char_frac": 1.0, "dup_para_frac": 1.0, "dup_line_frac": 1.0,
           "top_ngram_sizes": [], "top_ngram_max_fracs": [], "dup_ngram_sizes": [], "dup_ngram_max_fracs": []}
    assert _rep(text, **{**off, rule: frac}).keep
    assert _rep(text, **{**off, rule: frac - 1e-6}).reason == reason


def test_dup_line_fraction():
    ws = uniq_words(300, seed=2)
    lines = [" ".join(ws[i * 30:(i + 1) * 30]) for i in range(7)] + ["same line here"] * 4  # 3 dups / 11
    text = "\n".join(lines)
    assert _rep(text, dup_line_frac=3 / 11).keep
    assert _rep(text, dup_line_frac=3 / 11 - 1e-6).reason == "gopher_rep_dup_line_frac"


@pytest.mark.parametrize("n", [2, 3, 4])
def test_top_ngram_char_fraction(n):
    ws = uniq_words(80, seed=3)
    gram = ws[:n]
    words = ws[n:] + gram * 5
    text = " ".join(words)
    frac = sum(map(len, gram)) * 5 / len(text)
    sizes, fracs = [n], [frac]
    assert _rep(text, top_ngram_sizes=sizes, top_ngram_max_fracs=fracs, dup_ngram_sizes=[], dup_ngram_max_fracs=[]).keep
    assert _rep(text, top_ngram_sizes=sizes, top_ngram_max_fracs=[frac - 1e-6], dup_ngram_sizes=[],
                dup_ngram_max_fracs=[]).reason == f"gopher_rep_top_{n}_gram"


@pytest.mark.parametrize("n", [5, 6, 7, 8, 9, 10])
def test_duplicate_ngram_char_fraction(n):
    ws = uniq_words(120, seed=4)
    block = ws[:12]
    text = " ".join(ws[12:] + block + block)
    frac = sum(map(len, block)) / len(text)  # the second copy of the 12-word block is covered
    kw = dict(top_ngram_sizes=[], top_ngram_max_fracs=[], dup_ngram_sizes=[n])
    assert _rep(text, dup_ngram_max_fracs=[frac], **kw).keep
    assert _rep(text, dup_ngram_max_fracs=[frac - 1e-6], **kw).reason == f"gopher_rep_dup_{n}_gram"


def test_repetition_defaults_on_natural_text():
    from orchestrator.data.corpus import Vocabulary

    text = Vocabulary().document(random.Random(0))
    assert _rep(text).keep
    assert _rep("\n\n".join([text.split("\n")[0]] * 5)).reason == "gopher_rep_dup_para_frac"


# ----- C4 -----------------------------------------------------------------------------------------

C4 = C4Config()
BAD = compile_phrases(["shit", "porn"])
SENT = "The river runs past the old mill."


def c4_doc(n_sentences: int, extra: list[str] = ()) -> str:
    return "\n".join([SENT] * n_sentences + list(extra))


def test_c4_sentence_minimum():
    assert filters.c4(c4_doc(5), C4).keep
    assert filters.c4(c4_doc(4), C4).reason == "c4_too_few_sentences"
    assert filters.c4(" ".join([SENT] * 5), C4).keep  # five sentences on one line


@pytest.mark.parametrize("line", [
    "This line has no terminal punctuation",
    "This line trails off...",
    "Two words.",
    "Enable JavaScript to see this page.",
    "We use cookies to improve the experience.",
    "Read our privacy policy before you continue.",
    "The word " + "x" * 1001 + " is too long.",
])
def test_c4_line_rules_drop_lines(line):
    v = filters.c4(c4_doc(5, [line]), C4)
    assert v.keep and v.text == c4_doc(5)


def test_c4_line_thresholds_exact():
    assert filters.c4(c4_doc(5, ["Three words here."]), C4).text is None  # kept unchanged
    assert filters.c4(c4_doc(5, ["The word " + "x" * 1000 + " fits."]), C4).text is None


def test_c4_citations_removed():
    v = filters.c4(c4_doc(5, ["It was built in 1850.[1] It burned down.[citation needed]"]), C4)
    assert v.keep and "It was built in 1850. It burned down." in v.text and "[1]" not in v.text


@pytest.mark.parametrize("extra,reason", [
    ("Lorem ipsum dolor sit amet.", "c4_lorem_ipsum"),
    ("The function body is { return x; }.", "c4_curly_bracket"),
    ("This site is full of porn.", "c4_bad_words"),
])
def test_c4_page_rules(extra, reason):
    assert filters.c4(c4_doc(6, [extra]), C4, BAD).reason == reason


def test_c4_bad_words_need_word_boundaries():
    assert filters.c4(c4_doc(6, ["He ordered shitake mushrooms and a pornographer's memoir."]), C4, BAD).keep
    assert filters.c4(c4_doc(6, ["Bullshit, he said."]), C4, compile_phrases(["bullshit"])).reason == "c4_bad_words"


# ----- FineWeb --------------------------------------------------------------------------------------

LONG = "this is a fairly long line of ordinary words number"


def test_fineweb_line_punct_ratio():
    cfg = FineWebConfig()
    lines = [f"{LONG} {i}." for i in range(3)] + [f"{LONG} {i}" for i in range(3, 25)]  # 3/25 = 0.12
    assert filters.fineweb("\n".join(lines), cfg).reason == "fineweb_line_punct_ratio"
    lines[3] += "."  # 4/25 = 0.16
    assert filters.fineweb("\n".join(lines), cfg).keep
    none = "\n".join(f"{LONG} {i}" for i in range(25))
    assert filters.fineweb(none, cfg).reason == "fineweb_line_punct_ratio"
    assert filters.fineweb(none, replace(cfg, line_punct_exclude_zero=True)).keep


def test_fineweb_short_line_ratio():
    cfg = FineWebConfig()
    long_lines = [f"{LONG} {i}." for i in range(33)]
    short = [f"Short {i}." for i in range(67)]  # <= 30 chars
    assert filters.fineweb("\n".join(long_lines + short), replace(cfg, new_line_ratio=10)).reason == \
        "fineweb_short_line_ratio"  # 67/100 = 0.67
    assert filters.fineweb("\n".join(long_lines + [LONG + "."] + short[:66]), replace(cfg, new_line_ratio=10)).keep
    assert len("x" * 29 + ".") == 30 and filters.fineweb("\n".join(["x" * 29 + "."] * 1 + long_lines), cfg).keep


def test_fineweb_char_duplicates():
    cfg = FineWebConfig()
    lines = [f"{LONG} {i}." for i in range(40)]
    text = "\n".join(lines + [lines[0]])
    frac = len(lines[0]) / len(text.replace("\n", ""))
    assert frac > 0.01 and filters.fineweb(text, cfg).reason == "fineweb_char_dup_ratio"
    assert filters.fineweb(text, replace(cfg, char_duplicates_ratio=frac + 1e-9)).keep
    assert filters.fineweb(text, replace(cfg, char_duplicates_ratio=frac)).reason == "fineweb_char_dup_ratio"


def test_fineweb_newline_ratio():
    cfg = FineWebConfig()
    text = "\n".join(f"Item number {i} is here." for i in range(10))  # 9 newlines / 60 tokens = 0.15
    ratio = filters.fineweb(text, replace(cfg, short_line_thr=1.1)).stats["fineweb_newline_ratio"]
    assert ratio == pytest.approx(9 / 60)
    assert filters.fineweb(text, replace(cfg, short_line_thr=1.1, new_line_ratio=ratio)).keep
    assert filters.fineweb(text, replace(cfg, short_line_thr=1.1, new_line_ratio=ratio - 1e-6)).reason == \
        "fineweb_list_ratio"


# ----- language ----------------------------------------------------------------------------------------

def test_language_filter():
    en = "The house is on the hill and it was built for the family of the farmer with care."
    de = "Der Hund und die Katze sind in dem Haus, das nicht auf dem Berg ist, sich mit der Frau."
    cfg = LanguageConfig(enabled=True)
    assert filters.identify_language(en)[0] == "en" and filters.language(en, cfg).keep
    assert filters.identify_language(de)[0] == "de"
    assert filters.language(de, cfg).reason == "language_de"
    assert filters.language(de, LanguageConfig(enabled=True, languages=["de"])).keep
    assert filters.language("12345 67890", cfg).reason == "language_unknown"

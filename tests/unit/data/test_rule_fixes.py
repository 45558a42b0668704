"""Worked examples of the two rule fixes of issue #19, at the thresholds:

* C4: terminal punctuation followed by a closing quote or bracket (``.”``, ``?’``, ``!)``) ends a
  sentence and a line, so typographic prose keeps its sentences at the 5-sentence minimum;
* FineWeb (and Gopher's bullet/ellipsis line shares): blank lines between paragraphs are not lines.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from orchestrator.config.data_prep import C4Config, FineWebConfig, GopherQualityConfig
from orchestrator.data import filters
from orchestrator.data.text import count_sentences, ends_sentence

C4 = C4Config(filter_bad_words=False)
FW = FineWebConfig()
QUOTED = [
    "\u201cThe river rose over the old stone bridge last night.\u201d",
    "\u2018Did the farmers move their animals to the hill in time?\u2019",
    "(The water reached the church door before the morning came!)",
    "She wrote that the village had never seen such a flood.\u201d",
    "The mayor said the road would stay closed for a week.]",
    "\u201cWe will rebuild the bridge with stone from the quarry.\u201d",
]


@pytest.mark.parametrize("text,n", [
    ("He said \u201cgo home.\u201d She left.", 2),
    ("Why? \u2018Because.\u2019 Fine!) Done.", 4),
    ("A list (see above.) and more.", 2),
    ("Version 2.0 is out", 1),  # no sentence end: one sentence
    ("e.g. this", 1),  # '.' not followed by space or end inside 'e.g' is not counted
])
def test_count_sentences_with_closing_quotes_and_brackets(text, n):
    assert count_sentences(text) == n


@pytest.mark.parametrize("line,ends", [
    ("The bridge was closed.\u201d", True), ("Was it closed?\u2019", True), ("It was closed!)", True),
    ("It was closed.\u00bb", True), ('He said "closed"', True), ("It was (closed)", False),
    ("The bridge was closed", False), ("It trailed off...\u201d", True),
])
def test_ends_sentence(line, ends):
    assert ends_sentence(line) is ends


def test_c4_typographic_quotes_at_the_sentence_minimum():
    # five sentences, each line ending in a closing quote or bracket after . ? ! -> kept (5 >= 5)
    v = filters.c4("\n".join(QUOTED[:5]), C4)
    assert v.keep and v.stats["c4_sentences"] == 5 and v.text is None  # no line dropped
    # four such sentences -> removed (4 < 5), as with plain full stops
    v = filters.c4("\n".join(QUOTED[:4]), C4)
    assert v.reason == "c4_too_few_sentences" and v.stats["c4_sentences"] == 4
    # one line holding five quoted sentences counts five
    assert filters.c4(" ".join(QUOTED[:5]), C4).stats["c4_sentences"] == 5
    # a quoted line that trails off is still an ellipsis line and is dropped
    v = filters.c4("\n".join(QUOTED[:5] + ["And then the water came back again...\u201d"]), C4)
    assert v.keep and v.text == "\n".join(QUOTED[:5])


LONG = "this is a fairly long line of ordinary words number"


def paragraphs(lines: list[str]) -> str:
    """Lines as paragraphs: one blank line between them (what normalisation keeps)."""
    return "\n\n".join(lines)


def test_fineweb_short_lines_ignore_blank_lines_at_threshold():
    no_list = replace(FW, new_line_ratio=10)
    long_lines = [f"{LONG} {i}." for i in range(34)]
    short = [f"Short {i}." for i in range(67)]
    # 66 short of 100 non-blank lines = 0.66 < 0.67: kept; the 99 blank separators would make it
    # (66 + 99) / 199 = 0.83 >= 0.67 without the fix
    text = paragraphs(long_lines + short[:66])
    v = filters.fineweb(text, no_list)
    assert v.keep and v.stats["fineweb_short_line_ratio"] == pytest.approx(0.66)
    assert filters.fineweb(text, replace(no_list, skip_blank_lines=False)).reason == "fineweb_short_line_ratio"
    # 67 of 100 = 0.67: removed with or without blank lines
    v = filters.fineweb(paragraphs(long_lines[:33] + short), no_list)
    assert v.reason == "fineweb_short_line_ratio" and v.stats["fineweb_short_line_ratio"] == pytest.approx(0.67)


def test_fineweb_line_punctuation_ignores_blank_lines_at_threshold():
    lines = [f"{LONG} {i}." for i in range(4)] + [f"{LONG} {i}" for i in range(4, 25)]
    # 4 of 25 lines punctuated = 0.16 > 0.12: kept; counting the 24 blank lines: 4 / 49 = 0.08 <= 0.12
    v = filters.fineweb(paragraphs(lines), FW)
    assert v.keep and v.stats["fineweb_line_punct_ratio"] == pytest.approx(0.16)
    assert filters.fineweb(paragraphs(lines), replace(FW, skip_blank_lines=False)).reason == "fineweb_line_punct_ratio"
    # 3 of 25 = 0.12: removed (at the threshold)
    lines[3] = lines[3][:-1]
    assert filters.fineweb(paragraphs(lines), FW).reason == "fineweb_line_punct_ratio"


def test_fineweb_newline_ratio_counts_breaks_between_non_blank_lines():
    items = [f"Item number {i} is here." for i in range(10)]  # 60 tokens
    cfg = replace(FW, short_line_thr=1.1)
    assert filters.fineweb(paragraphs(items), cfg).stats["fineweb_newline_ratio"] == pytest.approx(9 / 60)
    raw = filters.fineweb(paragraphs(items), replace(cfg, skip_blank_lines=False))
    assert raw.stats["fineweb_newline_ratio"] == pytest.approx(18 / 60)
    assert filters.fineweb(paragraphs(items), replace(cfg, new_line_ratio=0.2)).keep  # 0.15 <= 0.2
    assert filters.fineweb(paragraphs(items), replace(cfg, new_line_ratio=0.2, skip_blank_lines=False)).reason \
        == "fineweb_list_ratio"


def test_paragraph_prose_passes_fineweb():
    prose = paragraphs([" ".join(["The house stood beside the quiet river with a garden."] * 3)] * 8)
    v = filters.fineweb(prose, replace(FW, char_duplicates_ratio=1.1))
    assert v.keep and v.stats["fineweb_short_line_ratio"] == 0.0 and v.stats["fineweb_line_punct_ratio"] == 1.0
    old = filters.fineweb(prose, replace(FW, char_duplicates_ratio=1.1, skip_blank_lines=False))
    assert old.stats["fineweb_short_line_ratio"] == pytest.approx(7 / 15)  # 7 blank lines of 15 were "short"


def test_gopher_bullet_and_ellipsis_shares_ignore_blank_lines():
    gq = GopherQualityConfig()
    line = "the house stood beside the quiet river with the garden"
    bullets = paragraphs(["\u2022 " + line] * 10)
    # 10 of 10 non-blank lines are bullets (> 0.9): removed; with the 9 blank lines 10/19 = 0.53 passed
    assert filters.gopher_quality(bullets, gq).reason == "gopher_too_many_bullets"
    assert filters.gopher_quality(bullets, replace(gq, skip_blank_lines=False)).keep
    nine = paragraphs(["\u2022 " + line] * 9 + [line])  # 9/10 = 0.9, at the threshold: kept
    assert filters.gopher_quality(nine, gq).keep
    ellipses = paragraphs([line + "..."] * 4 + [line] * 6)  # 4/10 = 0.4 > 0.3 (blank lines: 4/19 = 0.21)
    assert filters.gopher_quality(ellipses, gq).reason == "gopher_too_many_end_ellipsis"
    assert filters.gopher_quality(ellipses, replace(gq, skip_blank_lines=False)).keep

"""Document quality filters: Gopher quality and repetition, C4, FineWeb, language.

Each filter is a pure function ``(text, cfg) -> Verdict``. The rules and default thresholds follow
the papers (Gopher: Rae et al. 2021, Table A1; C4: Raffel et al. 2020; FineWeb: Penedo et al. 2024)
as implemented by datatrove, which served as the reference. Differences, all deliberate:
words come from :mod:`orchestrator.data.text` (a regex, not NLTK); Gopher's duplicate n-gram
fraction counts every character covered by a repeated n-gram once (datatrove's helper joins n-gram
strings instead of words); Gopher's duplicate-line rules ignore blank lines (paragraph separators
are not repeated content), and so do Gopher's bullet/ellipsis line shares and the FineWeb line rules
by default (``skip_blank_lines``; a blank line is a separator, not a short or unpunctuated line);
C4's page rules (lorem ipsum, curly bracket, bad words) look at the whole page as the paper states; a
C4 line or sentence also ends at terminal punctuation followed by closing quotes or brackets
(``.”``, ``?’``, ``!)``), which the reference's last-character test misses on typographic prose.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional, Sequence

from orchestrator.config.data_prep import (C4Config, FineWebConfig, GopherQualityConfig, GopherRepetitionConfig,
                                           LanguageConfig)
from orchestrator.data.text import CLOSERS, count_sentences, ends_sentence, is_punct, paragraphs, tokens, words

GOPHER_STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
BULLETS = ("\u2022", "\u2023", "\u25e6", "\u25cf", "\u25aa", "-", "*")
ELLIPSES = ("...", "\u2026")
C4_CITATION_RE = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
C4_POLICY_SUBSTRINGS = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies",
                        "use cookies")
FINEWEB_STOP_CHARS = (".", "'", '"', "!", "?")


@dataclass
class Verdict:
    """Outcome of one filter on one document."""

    keep: bool
    reason: Optional[str] = None
    """Why it was removed (``<filter>_<rule>``)."""
    text: Optional[str] = None
    """The document's new text when the filter rewrote it (C4 drops lines), else None."""
    stats: dict[str, float] = field(default_factory=dict)
    """Measured quantities (for the histograms)."""
    detail: dict[str, str] = field(default_factory=dict)
    """What the removal manifest records besides the reason (decontamination: benchmark and n-gram)."""


def _drop(reason: str, stats: dict[str, float]) -> Verdict:
    return Verdict(False, reason, None, stats)


def gopher_quality(text: str, cfg: GopherQualityConfig) -> Verdict:
    """Gopher quality rules on word counts, word lengths, symbols, bullets, ellipses, stop words."""
    toks = tokens(text)
    ws = [t for t in toks if not is_punct(t)]
    n = len(ws)
    stats: dict[str, float] = {"gopher_words": n}
    if n == 0 or n < cfg.min_doc_words:
        return _drop("gopher_short_doc", stats)
    if n > cfg.max_doc_words:
        return _drop("gopher_long_doc", stats)
    avg = sum(len(w) for w in ws) / n
    stats["gopher_mean_word_length"] = avg
    if avg < cfg.min_avg_word_length:
        return _drop("gopher_below_avg_word_length", stats)
    if avg > cfg.max_avg_word_length:
        return _drop("gopher_above_avg_word_length", stats)
    hashes = text.count("#") / n
    ellipses = (text.count("...") + text.count("\u2026")) / n
    stats["gopher_symbol_word_ratio"] = max(hashes, ellipses)
    if hashes > cfg.max_symbol_word_ratio:
        return _drop("gopher_too_many_hashes", stats)
    if ellipses > cfg.max_symbol_word_ratio:
        return _drop("gopher_too_many_ellipsis", stats)
    lines = [ln for ln in text.splitlines() if ln.strip() or not cfg.skip_blank_lines] or [""]
    if sum(line.lstrip().startswith(BULLETS) for line in lines) / len(lines) > cfg.max_bullet_lines_ratio:
        return _drop("gopher_too_many_bullets", stats)
    if sum(line.rstrip().endswith(ELLIPSES) for line in lines) / len(lines) > cfg.max_ellipsis_lines_ratio:
        return _drop("gopher_too_many_end_ellipsis", stats)
    alpha = sum(any(c.isalpha() for c in w) for w in ws) / n
    stats["gopher_alpha_words_ratio"] = alpha
    if alpha < cfg.min_alpha_words_ratio:
        return _drop("gopher_below_alpha_threshold", stats)
    stop = sum(w.lower() in GOPHER_STOP_WORDS for w in ws)
    stats["gopher_stop_words"] = stop
    if stop < cfg.min_stop_words:
        return _drop("gopher_few_stop_words", stats)
    return Verdict(True, stats=stats)


def duplicates(items: Sequence[str]) -> tuple[int, int]:
    """(number of items equal to an earlier item, their total characters)."""
    seen: set[str] = set()
    count = chars = 0
    for item in items:
        if item in seen:
            count += 1
            chars += len(item)
        else:
            seen.add(item)
    return count, chars


def top_ngram_chars(ws: Sequence[str], n: int) -> int:
    """Characters of the most frequent word n-gram times its count (0 when the text has < n words)."""
    grams = Counter(tuple(ws[i:i + n]) for i in range(len(ws) - n + 1))
    if not grams:
        return 0
    gram, count = grams.most_common(1)[0]
    return sum(len(w) for w in gram) * count


def duplicate_ngram_chars(ws: Sequence[str], n: int) -> int:
    """Characters of the words covered by any occurrence of an n-gram seen earlier (each word once)."""
    seen: set[tuple[str, ...]] = set()
    covered = [False] * len(ws)
    for i in range(len(ws) - n + 1):
        gram = tuple(ws[i:i + n])
        if gram in seen:
            covered[i:i + n] = [True] * n
        else:
            seen.add(gram)
    return sum(len(w) for w, c in zip(ws, covered) if c)


def gopher_repetition(text: str, cfg: GopherRepetitionConfig) -> Verdict:
    """Gopher repetition rules: repeated paragraphs/lines and repeated n-gram character fractions."""
    total = max(len(text), 1)
    paras = paragraphs(text)
    dup_paras, dup_para_chars = duplicates(paras)
    stats: dict[str, float] = {"dup_para_frac": dup_paras / len(paras)}
    if dup_paras / len(paras) > cfg.dup_para_frac:
        return _drop("gopher_rep_dup_para_frac", stats)
    if dup_para_chars / total > cfg.dup_para_char_frac:
        return _drop("gopher_rep_dup_para_char_frac", stats)
    lines = [line for line in text.splitlines() if line.strip()] or [""]  # blank lines separate, not repeat
    dup_lines, dup_line_chars = duplicates(lines)
    stats["dup_line_frac"] = dup_lines / len(lines)
    if dup_lines / len(lines) > cfg.dup_line_frac:
        return _drop("gopher_rep_dup_line_frac", stats)
    if dup_line_chars / total > cfg.dup_line_char_frac:
        return _drop("gopher_rep_dup_line_char_frac", stats)
    ws = words(text)
    for n, limit in zip(cfg.top_ngram_sizes, cfg.top_ngram_max_fracs):
        frac = top_ngram_chars(ws, n) / total
        stats[f"top_{n}_gram_char_frac"] = frac
        if frac > limit:
            return _drop(f"gopher_rep_top_{n}_gram", stats)
    for n, limit in zip(cfg.dup_ngram_sizes, cfg.dup_ngram_max_fracs):
        frac = duplicate_ngram_chars(ws, n) / total
        stats[f"dup_{n}_gram_char_frac"] = frac
        if frac > limit:
            return _drop(f"gopher_rep_dup_{n}_gram", stats)
    return Verdict(True, stats=stats)


def compile_phrases(phrases: Sequence[str]) -> Optional[re.Pattern[str]]:
    """One regex matching any phrase flanked by non-word characters (case-insensitive input)."""
    phrases = [p.strip().lower() for p in phrases if p.strip()]
    if not phrases:
        return None
    return re.compile(r"(?:\W|^)(?:" + "|".join(re.escape(p) for p in sorted(phrases, key=len, reverse=True))
                      + r")(?:\W|$)")


def c4(text: str, cfg: C4Config, bad_words: Optional[re.Pattern[str]] = None) -> Verdict:
    """C4 rules. Line rules drop lines (too long a word, no terminal punctuation, < 3 words,
    javascript, policy boilerplate); page rules remove the document (lorem ipsum, curly bracket, bad
    words, fewer than ``min_num_sentences`` sentences left)."""
    lower = text.lower()
    if cfg.filter_lorem_ipsum and "lorem ipsum" in lower:
        return _drop("c4_lorem_ipsum", {})
    if cfg.filter_curly_bracket and "{" in text:
        return _drop("c4_curly_bracket", {})
    if cfg.filter_bad_words and bad_words is not None and bad_words.search(lower):
        return _drop("c4_bad_words", {})
    kept: list[str] = []
    sentences = 0
    lines = text.splitlines()
    for raw in lines:
        line = raw.strip()
        line_words = line.split()
        if cfg.max_word_length >= 0 and any(len(w) > cfg.max_word_length for w in line_words):
            continue
        if cfg.remove_citations:
            line = C4_CITATION_RE.sub("", line)
        if cfg.filter_no_terminal_punct and (not ends_sentence(line) or line.rstrip(CLOSERS).endswith("...")):
            continue
        if len(line_words) < cfg.min_words_per_line:
            continue
        line_lower = line.lower()
        if cfg.filter_javascript and "javascript" in line_lower:
            continue
        if cfg.filter_policy and any(p in line_lower for p in C4_POLICY_SUBSTRINGS):
            continue
        sentences += count_sentences(line)
        kept.append(line)
    stats = {"c4_sentences": sentences, "c4_dropped_line_frac": 1 - len(kept) / max(len(lines), 1)}
    if sentences < cfg.min_num_sentences:
        return _drop("c4_too_few_sentences", stats)
    new_text = "\n".join(kept).strip()
    return Verdict(True, text=new_text if new_text != text else None, stats=stats)


def fineweb(text: str, cfg: FineWebConfig) -> Verdict:
    """FineWeb rules: punctuated-line share, short-line share, duplicated-line characters, list-likeness.

    With ``cfg.skip_blank_lines`` (default, as datatrove >= 0.10) blank lines are not lines: a
    paragraph separator is neither a short nor an unpunctuated line, and the newline ratio counts the
    breaks between non-blank lines only.
    """
    lines = text.split("\n")
    if cfg.skip_blank_lines:
        lines = [line for line in lines if line.strip()] or [""]
    punct = sum(line.endswith(FINEWEB_STOP_CHARS) for line in lines) / len(lines)
    stats: dict[str, float] = {"fineweb_line_punct_ratio": punct}
    if punct <= cfg.line_punct_thr and not (punct == 0 and cfg.line_punct_exclude_zero):
        return _drop("fineweb_line_punct_ratio", stats)
    short = sum(len(line) <= cfg.short_line_length for line in lines) / len(lines)
    stats["fineweb_short_line_ratio"] = short
    if short >= cfg.short_line_thr:
        return _drop("fineweb_short_line_ratio", stats)
    non_empty = [line for line in lines if line.strip()]
    dup_chars = duplicates(non_empty)[1] / max(len(text.replace("\n", "")), 1)
    stats["fineweb_char_dup_ratio"] = dup_chars
    if dup_chars >= cfg.char_duplicates_ratio:
        return _drop("fineweb_char_dup_ratio", stats)
    newlines = len(lines) - 1 if cfg.skip_blank_lines else text.count("\n")
    newline_ratio = newlines / max(len(tokens(text)), 1)
    stats["fineweb_newline_ratio"] = newline_ratio
    if newline_ratio > cfg.new_line_ratio:
        return _drop("fineweb_list_ratio", stats)
    return Verdict(True, stats=stats)


# Short, high-frequency function-word profiles: enough to tell these languages apart on documents of
# the length the Gopher rules keep (>= 50 words). Not a replacement for a trained identifier.
LANGUAGE_STOP_WORDS: dict[str, frozenset[str]] = {
    "en": frozenset("the of and to in is that it was for on are with as be at by this have from not".split()),
    "de": frozenset("der die und in den von zu das mit sich des auf für ist im dem nicht ein eine als".split()),
    "fr": frozenset("le la les de des et un une du est en que qui dans pour pas sur au avec ce".split()),
    "es": frozenset("el la de que y en los se del las un por con no una su para es al lo".split()),
    "it": frozenset("il di che e la per un in non una sono le del della si con gli da lo".split()),
    "nl": frozenset("de het een van en in is dat op te zijn met voor niet aan er die ook als".split()),
    "pt": frozenset("o a de que e do da em um para com não uma os no se na por mais as".split()),
}


def identify_language(text: str) -> tuple[Optional[str], float]:
    """(best language, its share of all stop-word hits); (None, 0.0) without any hit."""
    ws = [w.lower() for w in words(text)]
    hits = {lang: sum(w in stop for w in ws) for lang, stop in LANGUAGE_STOP_WORDS.items()}
    total = sum(hits.values())
    if total == 0:
        return None, 0.0
    best = max(hits, key=lambda k: hits[k])
    return best, hits[best] / total


def language(text: str, cfg: LanguageConfig) -> Verdict:
    lang, score = identify_language(text)
    stats = {"language_score": score}
    if lang is None or lang not in cfg.languages or score < cfg.min_score:
        return _drop(f"language_{lang or 'unknown'}", stats)
    return Verdict(True, stats=stats)

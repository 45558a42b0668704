"""Text primitives shared by the data_prep steps: normalisation, words, lines, paragraphs, sentences.

Word splitting is a regular expression rather than NLTK's ``word_tokenize`` (which datatrove uses):
no model download, deterministic, and fast. Words are runs of word characters (with inner
apostrophes/hyphens); punctuation runs are separate tokens.
"""

from __future__ import annotations

import re
import string
import unicodedata

TOKEN_RE = re.compile(r"\w+(?:['\u2019-]\w+)*|[^\w\s]+")
WORD_RE = re.compile(r"\w+")
PARAGRAPH_RE = re.compile(r"\n{2,}")
# closing quotes and brackets that may follow a sentence's terminal punctuation: ." .' .” .’ .» .) .] .}
CLOSERS = "\"')]}\u201d\u2019\u00bb\u203a"
SENTENCE_END_RE = re.compile(r"[.!?]+[" + re.escape(CLOSERS) + r"]*(?=\s|$)")
_PUNCT = set(string.punctuation) | set("\u2026\u201c\u201d\u2018\u2019\u2013\u2014\u00ab\u00bb")
# C0/C1 controls except \t and \n, plus zero-width and BOM characters.
_CONTROL_RE = re.compile("[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\u200b-\u200d\u2060\ufeff]")
_SPACES_RE = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
_BLANKS_RE = re.compile(r"\n{3,}")


def normalize_text(text: str, form: str = "NFC", strip_control: bool = True, collapse_whitespace: bool = True) -> str:
    """Unicode-normalise ``text``; ``\\r\\n``/``\\r`` become ``\\n``.

    Args:
        form: Unicode normal form.
        strip_control: drop control and zero-width characters.
        collapse_whitespace: one space for runs of horizontal whitespace, trimmed lines, at most one
            blank line between paragraphs, no leading/trailing blank lines.
    """
    text = unicodedata.normalize(form, text.replace("\r\n", "\n").replace("\r", "\n"))
    if strip_control:
        text = _CONTROL_RE.sub("", text)
    if collapse_whitespace:
        text = "\n".join(_SPACES_RE.sub(" ", line).strip() for line in text.split("\n"))
        text = _BLANKS_RE.sub("\n\n", text).strip()
    return text


def dedup_key_text(text: str) -> str:
    """The text exact dedup hashes: case-folded, all whitespace runs collapsed to one space."""
    return " ".join(text.casefold().split())


def tokens(text: str) -> list[str]:
    """Words and punctuation runs, in order."""
    return TOKEN_RE.findall(text)


def is_punct(token: str) -> bool:
    return all(c in _PUNCT for c in token)


def words(text: str) -> list[str]:
    """Tokens that are not pure punctuation."""
    return [t for t in tokens(text) if not is_punct(t)]


def shingle_words(text: str) -> list[str]:
    """Lower-cased word characters only: what MinHash shingles (punctuation and case changes do not
    make a copy look different)."""
    return WORD_RE.findall(text.lower())


def paragraphs(text: str) -> list[str]:
    return PARAGRAPH_RE.split(text.strip())


def count_sentences(line: str) -> int:
    """Sentence-final punctuation marks (., !, ?), optionally followed by closing quotes or brackets
    (``.”``, ``?’``, ``!)``), then whitespace or the end; at least 1 for a non-empty line (a line
    without one is one sentence)."""
    if not line.strip():
        return 0
    return max(1, len(SENTENCE_END_RE.findall(line)))


def ends_sentence(line: str) -> bool:
    """Whether ``line`` ends in terminal punctuation (., !, ?), possibly followed by closing quotes or
    brackets (``.”``, ``?’``, ``!)``), or in a straight quote (as the reference C4 rule accepts)."""
    line = line.rstrip()
    return line.endswith(('"', "'")) or line.rstrip(CLOSERS).endswith((".", "!", "?"))

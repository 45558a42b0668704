"""The default bad-words list of the C4 rule (a short English subset of the LDNOOBW list C4 used;
point ``data.c4.bad_words_file`` at the full list for production runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

DEFAULT_BAD_WORDS = (
    "fuck", "fucking", "motherfucker", "shit", "bullshit", "cunt", "cock", "dick", "pussy", "asshole",
    "bitch", "bastard", "whore", "slut", "porn", "porno", "pornography", "blowjob", "cumshot", "dildo",
    "nigger", "faggot", "xxx", "hentai", "bdsm", "anal", "orgasm", "rape", "incest", "milf",
)


def load_bad_words(path: Optional[str]) -> tuple[str, ...]:
    """Words of ``path`` (one per line, blank lines and ``#`` comments skipped) or the default list."""
    if path is None:
        return DEFAULT_BAD_WORDS
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return tuple(w.strip() for w in lines if w.strip() and not w.startswith("#"))

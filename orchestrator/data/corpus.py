"""Generated raw text for data_prep: the demo corpus (``data.input=null``), and planted-duplicate
corpora for the dedup tests and benchmark. No downloads.

Documents are English-like: real function words around a large generated vocabulary of
pronounceable content words, so unrelated documents share almost no word 5-grams (as real text)
while passing the Gopher, C4 and FineWeb rules.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Iterator

_ONSETS = ["b", "c", "d", "f", "g", "h", "l", "m", "n", "p", "r", "s", "t", "v", "br", "cr", "dr", "gr", "pl",
           "st", "tr", "sh", "ch", "th"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "ou", "io"]
_CODAS = ["", "n", "r", "l", "s", "t", "m", "nd", "st", "rk"]
_TEMPLATES = [
    "The {adj} {noun} {verb} the {noun2} of the {adj2} {noun3}.",
    "In the {noun} there is a {adj} {noun2} that {verb} with the {noun3}.",
    "A {noun} and the {noun2} have to {verb0} the {adj} {noun3} before {num} days.",
    "When the {noun} {verb}, the {adj} {noun2} moves to the {noun3}.",
    "Every {noun} of the {noun2} has {num} {adj} {noun3}s and one {noun4}.",
    "It is known that the {noun} {verb} when the {noun2} is {adj}.",
    "With a {adj} {noun}, the {noun2} can {verb0} the {noun3} and the {noun4}.",
    "Some say the {noun} was {adj} because the {noun2} {verb} it.",
]
_NUMBERS = ["two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "twelve"]


def _word(rng: random.Random, syllables: int) -> str:
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables))


class Vocabulary:
    """A fixed generated vocabulary (same seed, same words)."""

    def __init__(self, seed: int = 1234, size: int = 3000) -> None:
        rng = random.Random(seed)
        words = sorted({_word(rng, rng.choice((1, 2, 2, 3))) for _ in range(size * 2)})
        rng.shuffle(words)
        n = len(words)
        self.nouns = words[: n // 2]
        self.adjs = words[n // 2: 3 * n // 4]
        self.verbs = words[3 * n // 4:]

    def sentence(self, rng: random.Random) -> str:
        t = rng.choice(_TEMPLATES)
        s = t.format(adj=rng.choice(self.adjs), adj2=rng.choice(self.adjs), noun=rng.choice(self.nouns),
                     noun2=rng.choice(self.nouns), noun3=rng.choice(self.nouns), noun4=rng.choice(self.nouns),
                     verb=rng.choice(self.verbs) + "s", verb0=rng.choice(self.verbs), num=rng.choice(_NUMBERS))
        return s[0].upper() + s[1:]

    def document(self, rng: random.Random, paragraphs: tuple[int, int] = (3, 5),
                 sentences: tuple[int, int] = (3, 6)) -> str:
        """Paragraphs of sentences, separated by blank lines (about 100-300 words)."""
        return "\n\n".join(" ".join(self.sentence(rng) for _ in range(rng.randint(*sentences)))
                           for _ in range(rng.randint(*paragraphs)))


def edit_words(text: str, rate: float, rng: random.Random, vocab: Vocabulary) -> str:
    """Replace each word by a random vocabulary word with probability ``rate`` (lines kept)."""
    def line(ln: str) -> str:
        return " ".join(rng.choice(vocab.nouns) if rng.random() < rate else w for w in ln.split(" ")) if ln else ln
    return "\n".join(line(ln) for ln in text.split("\n"))


def reformat(text: str, rng: random.Random) -> str:
    """Same words, different surface: case changes, doubled spaces, trailing whitespace."""
    out = text.replace(". ", ".  ") if rng.random() < 0.5 else text.upper()
    return "\n".join(ln + "  " for ln in out.split("\n"))


JUNK_KINDS = ("short", "lorem", "curly", "repeated_lines", "bullets", "bad_words", "no_punct")


def junk_document(kind: str, rng: random.Random, vocab: Vocabulary) -> str:
    """A document that a specific filter removes."""
    if kind == "short":
        return vocab.sentence(rng)
    if kind == "lorem":
        return "Lorem ipsum dolor sit amet, consectetur adipiscing elit. " + vocab.document(rng)
    if kind == "curly":
        return vocab.document(rng) + "\n\nfunction main() { return the value; }"
    if kind == "repeated_lines":
        line = vocab.sentence(rng)
        return "\n".join([line] * 12 + [vocab.sentence(rng) for _ in range(3)])
    if kind == "bullets":
        return "\n".join("\u2022 " + " ".join(rng.choice(vocab.nouns) for _ in range(6)) for _ in range(20))
    if kind == "bad_words":
        return vocab.document(rng) + " This page is full of porn and other shit."
    return "\n".join(" ".join(rng.choice(vocab.nouns) for _ in range(8)) for _ in range(15))


def with_pii(text: str, rng: random.Random) -> str:
    pii = rng.choice([
        f"Write to {rng.choice(['anna', 'bo', 'chen'])}.{rng.randint(1, 99)}@example.com for the details.",
        f"Call the office at +1 (555) {rng.randint(100, 999)}-{rng.randint(1000, 9999)} before noon.",
        f"The server at 192.168.{rng.randint(0, 255)}.{rng.randint(1, 254)} answers every request.",
    ])
    return text + " " + pii


def demo_raw_records(num_docs: int, seed: int = 0) -> Iterator[Any]:
    """The demo corpus as JSON-able records (dicts) and, for the malformed lines, raw ``bytes``.

    About: ``num_docs`` originals (10 % with PII, a third without an id), 6 % exact copies, 4 %
    reformatted copies, 6 % near copies (1 % word edits), 7 % junk documents (one per filter), 1 %
    malformed lines (bad JSON, non-UTF-8, missing text).
    """
    rng = random.Random(seed)
    vocab = Vocabulary()
    originals: list[str] = []
    out: list[Any] = []
    for i in range(num_docs):
        text = vocab.document(rng)
        if rng.random() < 0.1:
            text = with_pii(text, rng)
        originals.append(text)
        rec: dict[str, Any] = {"text": text, "source": "demo"}
        if i % 3:
            rec = {"id": f"demo-{i:06d}", **rec}
        out.append(rec)
    n = len(originals)
    for j in range(max(1, n * 6 // 100)):
        out.append({"id": f"exact-{j}", "text": rng.choice(originals), "source": "demo-copy"})
    for j in range(max(1, n * 4 // 100)):
        out.append({"id": f"reformat-{j}", "text": reformat(rng.choice(originals), rng), "source": "demo-copy"})
    for j in range(max(1, n * 6 // 100)):
        out.append({"id": f"near-{j}", "text": edit_words(rng.choice(originals), 0.01, rng, vocab), "source": "demo-copy"})
    for j in range(max(len(JUNK_KINDS), n * 7 // 100)):
        out.append({"id": f"junk-{j}", "text": junk_document(JUNK_KINDS[j % len(JUNK_KINDS)], rng, vocab), "source": "junk"})
    rng.shuffle(out)
    bad: list[Any] = [b'{"id": "broken", "text": "unterminated', b'\xff\xfe{"text": "latin-1 \xe9"}',
                      {"id": "no-text", "body": "the text field is missing"}, b"[1, 2, 3]"]
    for j in range(max(len(bad), n // 100)):
        out.insert(rng.randrange(len(out)), bad[j % len(bad)])
    yield from out


def write_jsonl(path: str | Path, records: Iterator[Any]) -> int:
    """Write records (dicts as JSON, bytes verbatim) one per line; returns the line count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(path, "wb") as f:
        for rec in records:
            f.write((rec if isinstance(rec, bytes) else json.dumps(rec, ensure_ascii=False).encode()) + b"\n")
            count += 1
    return count


def planted_corpus(num_originals: int, seed: int, edit_rates: tuple[float, ...] = (0.0, 0.005, 0.01, 0.05, 0.1, 0.3),
                   copies_per_rate: int = 1, reformatted: int = 1, vocab: Vocabulary | None = None,
                   ) -> list[dict[str, Any]]:
    """Originals plus, for a subset of them, copies at each word-edit rate and reformatted copies.

    Records: ``{"id", "text", "origin"}`` where origin is the id of the original (own id for an
    original). Rates 0.0 give exact copies. Ground truth should come from the true shingle Jaccard,
    not from the rate (an edit rate maps to a spread of Jaccard values).
    """
    rng = random.Random(seed)
    vocab = vocab or Vocabulary()
    docs: list[dict[str, Any]] = []
    for i in range(num_originals):
        text = vocab.document(rng, paragraphs=(4, 6), sentences=(5, 8))  # 250-600 words
        docs.append({"id": f"o{i}", "text": text, "origin": f"o{i}"})
        if i % 2:  # half the originals get copies
            continue
        for rate in edit_rates:
            for c in range(copies_per_rate):
                copy = text if rate == 0 else edit_words(text, rate, rng, vocab)
                docs.append({"id": f"o{i}-e{rate}-{c}", "text": copy, "origin": f"o{i}"})
        for c in range(reformatted):
            docs.append({"id": f"o{i}-fmt-{c}", "text": reformat(text, rng), "origin": f"o{i}"})
    return docs

"""The per-document steps of data_prep in their fixed order, as one pure function per document.

normalise -> language -> Gopher quality -> Gopher repetition -> C4 -> FineWeb -> decontaminate -> PII
scrub; then
the exact-dedup key and the MinHash signature are computed for the shuffle-based dedup steps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import xxhash

from orchestrator.config.data_prep import DataPrepDataConfig
from orchestrator.data import filters
from orchestrator.data.badwords import load_bad_words
from orchestrator.data.minhash import band_keys, make_permutations, shingle_hashes, signature
from orchestrator.data.pii import scrub_pii
from orchestrator.data.text import dedup_key_text, normalize_text

# Step names, in pipeline order (the removal manifest and the stats use them).
STEPS = ("normalize", "language", "gopher_quality", "gopher_repetition", "c4", "fineweb", "decontaminate", "pii",
         "exact_dedup", "near_dedup")
QUALITY_STEPS = ("gopher_quality", "gopher_repetition", "c4", "fineweb")


@dataclass
class DocResult:
    """What the per-document steps made of one document."""

    text: Optional[str]
    """Final text (None when removed)."""
    removed_by: Optional[str] = None
    reason: Optional[str] = None
    stats: dict[str, float] = field(default_factory=dict)
    pii_replacements: int = 0
    steps_passed: tuple[str, ...] = ()
    """Enabled steps the document went through and survived, in order."""
    text_after: dict[str, int] = field(default_factory=dict)
    """Bytes of the text after each step it passed (for bytes-in/out stats)."""
    detail: dict[str, str] = field(default_factory=dict)
    """Extra fields of the removal manifest entry (decontamination: benchmark, ngram)."""


class DocumentSteps:
    """Compiled per-document steps of one config (bad-words regex, hash permutations)."""

    def __init__(self, cfg: DataPrepDataConfig, decontam_dir: Optional[Path] = None) -> None:
        """``decontam_dir``: the n-gram index that :func:`orchestrator.data.decontam.build_index` wrote
        (needed when decontamination is on)."""
        self.cfg = cfg
        self.decontam_on = cfg.decontaminate.enabled and bool(cfg.decontaminate.paths)
        self._decontam_dir = decontam_dir
        self._matcher: Any = None
        self.quality = cfg.format == "pretrain"  # web-text rules make no sense on SFT/preference records
        self.bad_words = filters.compile_phrases(load_bad_words(cfg.c4.bad_words_file)) if cfg.c4.filter_bad_words else None
        mh = cfg.minhash
        self.perm_a, self.perm_b = make_permutations(mh.num_bands * mh.rows_per_band, mh.seed)

    def enabled_steps(self) -> list[str]:
        c = self.cfg
        on = {"normalize": c.normalize.enabled, "language": c.language.enabled,
              "gopher_quality": c.gopher_quality.enabled and self.quality,
              "gopher_repetition": c.gopher_repetition.enabled and self.quality,
              "c4": c.c4.enabled and self.quality, "fineweb": c.fineweb.enabled and self.quality,
              "decontaminate": self.decontam_on,
              "pii": c.pii.enabled, "exact_dedup": c.exact_dedup.enabled, "near_dedup": c.minhash.enabled}
        return [s for s in STEPS if on[s]]

    def normalize(self, text: str) -> str:
        n = self.cfg.normalize
        return normalize_text(text, n.form, n.strip_control, n.collapse_whitespace) if n.enabled else text

    def decontaminate(self, text: str) -> filters.Verdict:
        """Removed when one of its word n-grams occurs in the evaluation sets."""
        if self._matcher is None:  # opened on first use: the index is built after the config is checked
            from orchestrator.data.decontam import DecontMatcher

            assert self._decontam_dir is not None, "decontamination needs its index directory"
            self._matcher = DecontMatcher(self._decontam_dir)
        found = self._matcher.match(text)
        if found is None:
            return filters.Verdict(True)
        return filters.Verdict(False, "decontaminated", detail={"benchmark": found[0], "ngram": found[1]})

    def scrub(self, text: str) -> tuple[str, int]:
        if not self.cfg.pii.enabled:
            return text, 0
        new, counts = scrub_pii(text, self.cfg.pii)
        return new, counts.total

    def run(self, text: str) -> DocResult:
        """Apply the per-document steps to a pretraining document."""
        c = self.cfg
        stats: dict[str, float] = {}
        passed: list[str] = []
        sizes: dict[str, int] = {}
        if c.normalize.enabled:
            text = self.normalize(text)
            passed.append("normalize")
            sizes["normalize"] = len(text.encode())
        checks = [("language", c.language.enabled, lambda t: filters.language(t, c.language))]
        if self.quality:
            checks += [
                ("gopher_quality", c.gopher_quality.enabled, lambda t: filters.gopher_quality(t, c.gopher_quality)),
                ("gopher_repetition", c.gopher_repetition.enabled,
                 lambda t: filters.gopher_repetition(t, c.gopher_repetition)),
                ("c4", c.c4.enabled, lambda t: filters.c4(t, c.c4, self.bad_words)),
                ("fineweb", c.fineweb.enabled, lambda t: filters.fineweb(t, c.fineweb)),
            ]
        checks.append(("decontaminate", self.decontam_on, self.decontaminate))
        for step, enabled, check in checks:
            if not enabled:
                continue
            verdict = check(text)
            stats.update(verdict.stats)
            if not verdict.keep:
                return DocResult(None, step, verdict.reason, stats, 0, tuple(passed), sizes, verdict.detail)
            if verdict.text is not None:
                text = verdict.text
            passed.append(step)
            sizes[step] = len(text.encode())
        replaced = 0
        if c.pii.enabled:
            text, replaced = self.scrub(text)
            passed.append("pii")
            sizes["pii"] = len(text.encode())
        stats["pii_replacements"] = replaced
        return DocResult(text, None, None, stats, replaced, tuple(passed), sizes)

    def exact_key(self, text: str) -> str:
        return xxhash.xxh3_128_hexdigest(dedup_key_text(text).encode())

    def shingle_hashes(self, text: str) -> np.ndarray:
        """Distinct shingle hashes, sorted (what exact near-duplicate verification compares)."""
        return shingle_hashes(text, self.cfg.minhash.ngram)

    def signature(self, text: str, hashes: Optional[np.ndarray] = None) -> np.ndarray:
        """MinHash signature of ``text`` (or of its already computed ``hashes``)."""
        return signature(self.shingle_hashes(text) if hashes is None else hashes, self.perm_a, self.perm_b)

    def band_keys(self, sig: np.ndarray) -> np.ndarray:
        return band_keys(sig, self.cfg.minhash.num_bands, self.cfg.minhash.rows_per_band)


def record_text(fields: dict[str, Any], names: tuple[str, ...]) -> str:
    """The text of a record-format example that dedup looks at (its fields joined by blank lines)."""
    return "\n\n".join(str(fields[n]) for n in names)

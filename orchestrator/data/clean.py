"""In-process data_prep for small in-memory corpora (demo data, tests): the same per-document steps
and the same exact/near dedup functions as the Ray job, without Ray or files."""

from __future__ import annotations

from typing import Iterable, Optional

import numpy as np

from orchestrator.config.data_prep import DataPrepDataConfig
from orchestrator.data.dedup import dedup_local
from orchestrator.data.steps import DocumentSteps


def clean_documents(texts: Iterable[str], cfg: Optional[DataPrepDataConfig] = None) -> list[str]:
    """Texts that survive normalisation, the enabled filters, PII scrubbing and dedup (in input
    order, scrubbed and normalised)."""
    cfg = cfg or DataPrepDataConfig()
    steps = DocumentSteps(cfg)
    kept = [r.text for r in map(steps.run, texts) if r.text is not None]
    if not kept or not (cfg.exact_dedup.enabled or cfg.minhash.enabled):
        return kept
    hashes = [steps.shingle_hashes(t) for t in kept] if cfg.minhash.enabled else []
    sigs = [steps.signature(t, h).tobytes() for t, h in zip(kept, hashes)]
    removed = dedup_local(np.arange(len(kept)), [str(i) for i in range(len(kept))],
                          [steps.exact_key(t) for t in kept], sigs, cfg.minhash,
                          exact=cfg.exact_dedup.enabled, near=cfg.minhash.enabled, shingle_sets=hashes)
    return [t for i, t in enumerate(kept) if i not in removed]

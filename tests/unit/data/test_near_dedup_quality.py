"""Planted near-duplicate corpus: originals plus exact, reformatted and word-edited copies (edit
rates 0.5 % to 30 %). Removals of exact + near dedup are scored against the true Jaccard similarity
of the word 5-gram shingles (a document should go iff an earlier document has Jaccard >= 0.8)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from orchestrator.config.data_prep import DataPrepDataConfig
from orchestrator.data.corpus import planted_corpus
from orchestrator.data.dedup import dedup_local
from orchestrator.data.minhash import jaccard, shingles
from orchestrator.data.steps import DocumentSteps


def score(docs, removed, threshold, n):
    texts = [d["text"] for d in docs]
    sh = [shingles(t, n) for t in texts]
    by_origin = defaultdict(list)
    for i, d in enumerate(docs):
        by_origin[d["origin"]].append(i)
    truth = set()
    for members in by_origin.values():  # different originals share no 5-gram (checked below)
        for k, i in enumerate(members):
            if any(jaccard(sh[i], sh[j]) >= threshold for j in members[:k]):
                truth.add(i)
    tp = len(truth & removed)
    return tp / max(len(removed), 1), tp / len(truth), truth


@pytest.mark.parametrize("seed", [0, 1])
def test_planted_corpus_precision_recall(seed):
    cfg = DataPrepDataConfig()
    steps = DocumentSteps(cfg)
    docs = planted_corpus(300, seed=seed)
    texts = [steps.normalize(d["text"]) for d in docs]
    removed = dedup_local(np.arange(len(docs)), [d["id"] for d in docs], [steps.exact_key(t) for t in texts],
                          [steps.signature(t).tobytes() for t in texts], cfg.minhash)
    precision, recall, truth = score([{**d, "text": t} for d, t in zip(docs, texts)], set(removed),
                                     cfg.minhash.threshold, cfg.minhash.ngram)
    assert precision >= 0.98 and recall >= 0.98, (precision, recall)
    assert len(truth) > 500
    # exact and reformatted copies are exact-dedup removals pointing at their original
    for i, d in enumerate(docs):
        if "-e0.0-" in d["id"] or "-fmt-" in d["id"]:
            assert removed[i] == ("exact_dedup", d["origin"])
    # every near removal points at the original (the first document of its cluster)
    near = [(docs[i], dup) for i, (step, dup) in removed.items() if step == "near_dedup"]
    assert near and all(dup == d["origin"] for d, dup in near)


def test_unrelated_originals_share_no_shingles():
    docs = [d for d in planted_corpus(60, seed=3) if d["id"] == d["origin"]]
    sh = [shingles(d["text"], 5) for d in docs]
    assert max(jaccard(sh[i], sh[j]) for i in range(len(sh)) for j in range(i)) < 0.05

"""Decontamination (issue #19): documents containing a planted benchmark passage (verbatim, reformatted,
embedded in other text) are removed with the benchmark and n-gram in the removal manifest; clean near
misses (12 shared words in a row, the same words reordered) are kept. The index is built in-process
here (the job runs the same task functions as Ray Data tasks)."""

from __future__ import annotations

import json
import random

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestrator.config import ConfigError
from orchestrator.config.data_prep import DataPrepDataConfig, DecontaminateConfig
from orchestrator.data.corpus import Vocabulary, write_jsonl
from orchestrator.data.decontam import DecontMatcher, build_index, eval_words, gram_hashes
from orchestrator.data.finalize import finalize_partition
from orchestrator.data.inputs import resolve_partitions
from orchestrator.data.partition import process_partition

PASSAGE = ("Natalia sold clips to forty-eight of her friends in April, and then she sold half as many clips "
           "in May. How many clips did Natalia sell altogether in April and May?")
OTHER = "Which of the following statements about the structure of the mitochondrial inner membrane is correct"


def in_process(fn, items, **kwargs):
    return [fn(**item, **kwargs) for item in items]


def write_evals(d):
    write_jsonl(d / "gsm8k-test.jsonl", [{"question": PASSAGE, "answer": "Natalia sold 72 clips."}])
    pq.write_table(pa.Table.from_pylist([{"question": "What is two plus two?",
                                          "choices": [OTHER + " in eukaryotic cells today?", "none"]}]),
                   d / "mmlu.parquet")
    datasets.Dataset.from_list([{"prompt": "def add(a, b): return the sum of the two integers a and b "
                                           "without using the plus operator at all"}]).save_to_disk(str(d / "humaneval"))
    return DecontaminateConfig(paths=[str(d / "gsm8k-test.jsonl"), str(d / "mmlu.parquet"), str(d / "humaneval")])


def test_gram_hashes_follow_the_normalised_words():
    w = eval_words("The  QUICK brown\nfox, jumps!")
    assert w == ["the", "quick", "brown", "fox", "jumps"]
    g = gram_hashes(w, 3)
    assert len(g) == 3 and len(set(g.tolist())) == 3
    assert gram_hashes(eval_words("x the quick brown fox"), 3)[1] == g[0]  # same words, same hash
    assert len(gram_hashes(w, 6)) == 0


@pytest.mark.parametrize("num_shards", [1, 4])
def test_index_matches_benchmarks_and_records_the_ngram(tmp_path, num_shards):
    cfg = write_evals(tmp_path)
    meta = build_index(cfg, tmp_path / "work", 32, num_shards=num_shards, run=in_process)
    assert meta["benchmarks"] == ["gsm8k-test", "mmlu", "humaneval"] and meta["num_shards"] == num_shards
    assert meta["short_texts"] == 3  # the gsm8k answer, "what is two plus two?", "none": < 13 words
    m = DecontMatcher(tmp_path / "work" / "decontam")
    bench, gram = m.match("Some intro text. " + PASSAGE + " And an outro.")
    assert bench == "gsm8k-test" and gram == "natalia sold clips to forty eight of her friends in april and then"
    assert m.match("Quiz: " + OTHER.upper() + " IN EUKARYOTIC CELLS TODAY?")[0] == "mmlu"  # a list field's entry
    assert m.match("def add(a, b): return the sum of the two integers a and b without using")[0] == "humaneval"
    assert m.match("An unrelated sentence about rivers and bridges in the old town.") is None
    # rebuilt only when the evaluation set changes
    assert build_index(cfg, tmp_path / "work", 32, num_shards=num_shards, run=in_process) == meta


def planted_docs() -> list[dict]:
    rng = random.Random(0)
    v = Vocabulary()
    words = PASSAGE.split()
    near_miss = " ".join(w if (i + 1) % 12 else "pebbles" for i, w in enumerate(words))  # <= 11 words in a row
    shuffled = " ".join(sorted(words))
    return [
        {"id": "clean", "text": v.document(rng)},
        {"id": "verbatim", "text": v.document(rng) + "\n\n" + PASSAGE},
        {"id": "reformatted", "text": v.document(rng) + "\n\n" + PASSAGE.upper().replace(" ", "  ").replace(",", " ;")
         .replace("April", "April\n")},
        {"id": "embedded", "text": v.document(rng).replace(". ", ". " + PASSAGE[:120] + " ", 1)},
        {"id": "near-miss", "text": v.document(rng) + "\n\n" + near_miss + "."},
        {"id": "reordered", "text": v.document(rng) + "\n\n" + shuffled + "."},
    ]


def test_planted_benchmark_passages_removed_near_misses_kept(tmp_path):
    evals = write_evals(tmp_path)
    write_jsonl(tmp_path / "in.jsonl", planted_docs())
    cfg = DataPrepDataConfig(input=str(tmp_path / "in.jsonl"), decontaminate=evals)
    build_index(cfg.decontaminate, tmp_path / "work", 32, run=in_process)
    _, parts = resolve_partitions(tmp_path, cfg)
    s = process_partition(parts[0], cfg, tmp_path / "work")
    assert s["steps"]["reasons"] == {"decontaminate/decontaminated": 3}
    assert s["steps"]["docs_in"]["decontaminate"] == 6 and s["steps"]["docs_out"]["decontaminate"] == 3
    finalize_partition(0, cfg, tmp_path / "work", tmp_path)
    rem = {r["id"]: r for r in map(json.loads, (tmp_path / "removals/part-00000.jsonl").read_text().splitlines())}
    assert set(rem) == {"verbatim", "reformatted", "embedded"}
    assert all(r["step"] == "decontaminate" and r["reason"] == "decontaminated" and r["benchmark"] == "gsm8k-test"
               for r in rem.values())
    assert len(rem["embedded"]["ngram"].split()) == 13 and rem["embedded"]["ngram"] in " ".join(eval_words(PASSAGE))
    kept = [json.loads(x)["id"] for x in (tmp_path / "kept/part-00000.jsonl").read_text().splitlines()]
    assert kept == ["clean", "near-miss", "reordered"]


def test_config_refuses_bad_values(tmp_path):
    with pytest.raises(ConfigError, match="data.decontaminate.paths"):
        DecontaminateConfig(paths=[str(tmp_path / "missing.jsonl")])
    with pytest.raises(ConfigError, match="data.decontaminate.ngram"):
        DecontaminateConfig(ngram=3)
    assert DecontaminateConfig().ngram == 13 and DecontaminateConfig().paths == []
    (tmp_path / "short.jsonl").write_text(json.dumps({"question": "too short to index"}) + "\n")
    with pytest.raises(ConfigError, match="no evaluation text of >= 13 words"):
        build_index(DecontaminateConfig(paths=[str(tmp_path / "short.jsonl")]), tmp_path / "w", 32, run=in_process)
    assert build_index(DecontaminateConfig(), tmp_path / "w", 32, run=in_process) is None
    assert np.all(gram_hashes(eval_words(PASSAGE), 13) == gram_hashes(eval_words(PASSAGE.upper()), 13))

"""Per-step statistics: counts chain from step to step, fractions and bytes add up, MLflow metrics."""

from __future__ import annotations

from orchestrator.data.stats import aggregate_step_stats, stats_metrics

STEPS = ["normalize", "gopher_quality", "pii", "exact_dedup", "near_dedup"]


def s1(docs_in, docs_out, removed_q, q):
    return {"docs_in": docs_in, "docs_out": docs_out, "bytes_in": docs_in * 100, "quarantined": q,
            "steps": {"docs_in": {"normalize": docs_in, "gopher_quality": docs_in, "pii": docs_out},
                      "docs_out": {"normalize": docs_in, "gopher_quality": docs_out, "pii": docs_out},
                      "bytes_in": {"normalize": docs_in * 100, "gopher_quality": docs_in * 90, "pii": docs_out * 90},
                      "bytes_out": {"normalize": docs_in * 90, "gopher_quality": docs_out * 90, "pii": docs_out * 80},
                      "reasons": {"gopher_quality/gopher_short_doc": removed_q}}}


def test_aggregate_chains_steps_and_counts():
    stage1 = [s1(10, 8, 2, {"bad_json": 1}), s1(20, 15, 5, {"non_utf8": 2})]
    stage3 = [{"partition": 0, "kept": 6, "kept_bytes": 480, "exact_dedup": 1, "exact_dedup_bytes": 80,
               "near_dedup": 1, "near_dedup_bytes": 80},
              {"partition": 1, "kept": 12, "kept_bytes": 960, "exact_dedup": 2, "exact_dedup_bytes": 160,
               "near_dedup": 1, "near_dedup_bytes": 80}]
    st = aggregate_step_stats(STEPS, stage1, stage3)
    steps = {s["step"]: s for s in st["steps"]}
    assert [s["step"] for s in st["steps"]] == STEPS
    assert steps["gopher_quality"]["docs_in"] == 30 and steps["gopher_quality"]["docs_out"] == 23
    assert steps["gopher_quality"]["reasons"] == {"gopher_short_doc": 7}
    assert steps["exact_dedup"]["docs_in"] == 23 and steps["exact_dedup"]["removed"] == 3
    assert steps["near_dedup"]["docs_in"] == 20 and steps["near_dedup"]["docs_out"] == 18 == st["docs_kept"]
    assert steps["exact_dedup"]["bytes_in"] == 1840 and steps["near_dedup"]["bytes_out"] == 1440
    assert abs(steps["exact_dedup"]["removed_fraction"] - 3 / 23) < 1e-6
    assert st["quarantined"] == 3 and st["records_in"] == 33 and st["quarantine_reasons"] == {"bad_json": 1, "non_utf8": 2}
    for a, b in zip(st["steps"], st["steps"][1:]):
        assert a["docs_out"] == b["docs_in"]
    m = stats_metrics(st | {"num_tokens": 999})
    assert m["near_dedup.docs_out"] == 18 and m["quarantined"] == 3 and m["num_tokens"] == 999


def test_filter_histograms_png_one_panel_per_measure_with_finite_values(tmp_path):
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    from orchestrator.data.stats import plot_filter_histograms

    rng = np.random.default_rng(0)
    files = []
    for i in range(2):  # two partitions' filter statistics; NaN = not measured, inf must not break the range
        words = rng.normal(200, 40, 50)
        words[:3] = np.nan
        ratio = np.zeros(50)  # a constant column (all documents alike)
        ratio[0] = np.inf
        path = tmp_path / f"part_{i}.parquet"
        pq.write_table(pa.table({"gopher_words": words, "dup_line_frac": ratio, "c4_sentences": rng.poisson(9, 50),
                                 "top_2_gram_char_frac": rng.random(50), "never_measured": np.full(50, np.nan)}), path)
        files.append(str(path))
    out = plot_filter_histograms(files, tmp_path / "plots")
    assert out == tmp_path / "plots" / "filter_histograms.png"
    with Image.open(out) as img:
        # four measured columns fill one row of 4 panels (the never-measured one gets none: a 5th would add a row)
        assert img.format == "PNG" and img.size == (4 * 4 * 80, int(2.8 * 80))
    assert plot_filter_histograms([], tmp_path / "none") is None  # nothing measured: no file

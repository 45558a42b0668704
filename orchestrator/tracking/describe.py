"""One sentence that says what a run is, shown by the MLflow UI as the run's description.

MLflow reads a run's description from the tag ``mlflow.note.content``; :meth:`JobTracker.start` sets it
for every run it opens (each kind, the pipeline parent, a sweep parent), from the resolved config and
the run's tags alone, so the sentence is the same wherever the job runs. Generic on purpose: it reads
fields a config has (``model``, ``data``, ``trainer``, ``pipeline``), never a list of kinds.

Public API:
    NOTE_TAG
    describe_run(cfg, tags) -> str
"""

from __future__ import annotations

from typing import Any, Mapping

NOTE_TAG = "mlflow.note.content"


def _model(cfg: Any, tags: Mapping[str, str]) -> str:
    m = cfg.model
    if tags.get("upstream_model"):
        return f"model version {tags['upstream_model']}"
    if m.pretrained:
        return str(m.pretrained)
    return f"a new {m.num_params() / 1e6:.2g}M-parameter {m.arch} ({m.num_layers} layers x {m.hidden_size})"


def _training(cfg: Any, tags: Mapping[str, str]) -> str:
    data = cfg.data.path or "the built-in demo data"
    t = cfg.trainer
    return (f"trains {_model(cfg, tags)} on {data} for {t.max_steps} steps "
            f"(global batch {t.global_batch_size}, lr {t.lr:g})")


def _data_prep(cfg: Any) -> str:
    d = cfg.data
    source = d.input or "the generated demo corpus"
    return f"turns {source} into a {d.format} dataset (seq_len {d.seq_len})"


def _pipeline(cfg: Any) -> str:
    names = [s.name for s in cfg.pipeline.stages]
    return f"runs the {len(names)} stages of pipeline '{cfg.pipeline.name}' ({' -> '.join(names)}), each as a child run"


def _what(cfg: Any, tags: Mapping[str, str]) -> str:
    if tags.get("sweep"):
        return f"runs {tags.get('sweep_points', 'the')} {tags['sweep']} sweep points one after the other, each as a child run"
    if hasattr(cfg, "pipeline") and hasattr(cfg.pipeline, "stages"):
        return _pipeline(cfg)
    if hasattr(cfg, "trainer") and hasattr(cfg, "model"):
        return _training(cfg, tags)
    if hasattr(cfg, "data") and hasattr(cfg.data, "input"):
        return _data_prep(cfg)
    return ""


def _lineage(cfg: Any, tags: Mapping[str, str]) -> str:
    parts = []
    if tags.get("pipeline_stage"):
        parts.append(f"stage '{tags['pipeline_stage']}' of pipeline '{tags.get('pipeline', '?')}'")
    if tags.get("sweep_point"):
        parts.append(f"sweep point '{tags['sweep_point']}'")
    if tags.get("upstream_reward_model"):
        parts.append(f"scored by reward model {tags['upstream_reward_model']}")
    if tags.get("upstream_dataset_digest"):
        parts.append(f"data digest {tags['upstream_dataset_digest'][:12]}")
    parent = cfg.tracking.parent_run_id
    if parent:
        parts.append(f"child of run {parent}")
    return "; ".join(parts)


def describe_run(cfg: Any, tags: Mapping[str, str]) -> str:
    """``<kind> run '<name>': <what>[; <lineage>].`` for a run of ``cfg`` with ``tags`` (its own and
    ``tracking.tags``), e.g. ``sft run 'pipeline-default-sft': trains model version pipeline-default-pretrain/1
    on outputs/.../dataset for 150 steps (global batch 16, lr 0.003); stage 'sft' of pipeline 'default';
    child of run 5f0c....``"""
    kind = f"{tags['sweep']} sweep" if tags.get("sweep") else cfg.kind
    try:
        parts = [_what(cfg, tags), _lineage(cfg, tags)]
    except Exception:  # a description is never worth a failed start
        parts = []
    body = "; ".join(p for p in parts if p)
    return f"{kind} run '{cfg.run_name}'" + (f": {body}." if body else ".")

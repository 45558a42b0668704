"""Cross-group validation shared by every kind: every user mistake fails before Ray is asked for anything.

The kind-specific checks live in each kind's module; ``orchestrator.kinds.validate`` runs both.
"""

from __future__ import annotations

import json
from pathlib import Path

from orchestrator.config.errors import require
from orchestrator.config.jobs import JobConfig, TrainJobConfig
from orchestrator.core.files import is_remote_uri

_RESUME_WORDS = ("auto", "never")


def validate_common(cfg: JobConfig) -> None:
    """Check the relations between groups of a typed config (every kind).

    Raises:
        ConfigError: naming the key at fault and the fix.
    """
    if cfg.resume not in _RESUME_WORDS:
        require(Path(cfg.resume).exists(), "resume", f"checkpoint path {cfg.resume!r} does not exist",
                "use resume=auto, resume=never or an existing checkpoint directory")
    if isinstance(cfg, TrainJobConfig):
        _validate_train(cfg)


def _validate_train(cfg: TrainJobConfig) -> None:
    m, p, c = cfg.model, cfg.parallel, cfg.cluster
    require(m.num_heads % p.tensor_parallel == 0, "parallel.tensor_parallel",
            f"{p.tensor_parallel} does not divide model.num_heads={m.num_heads}",
            "use a tensor_parallel degree that divides the number of heads")
    require(m.kv_heads % p.tensor_parallel == 0, "parallel.tensor_parallel",
            f"{p.tensor_parallel} does not divide model.num_kv_heads={m.kv_heads}",
            "use a tensor_parallel degree that divides the number of key/value heads")
    require(m.num_layers % p.pipeline_parallel == 0, "parallel.pipeline_parallel",
            f"{p.pipeline_parallel} does not divide model.num_layers={m.num_layers}",
            "use a pipeline_parallel degree that divides the number of layers")
    world = c.num_workers
    mp = p.tensor_parallel * p.pipeline_parallel
    require(world % mp == 0, "cluster.num_workers",
            f"world size {world} is not dp*tp*pp for tensor_parallel={p.tensor_parallel} x "
            f"pipeline_parallel={p.pipeline_parallel}",
            f"use a multiple of {mp} workers or lower parallel.tensor_parallel/pipeline_parallel")
    # AutoTP composes with ZeRO 0-3 in DeepSpeed 0.19.8 (ZeRO partitions over the data-parallel group of its
    # (data, tensor) mesh; ZeRO-3 export gathers both dimensions). It does not compose with PipelineModule:
    # AutoTP builds a 2-D (data, tensor) mesh and the pipeline engine takes its groups from the pipeline's
    # own (data, pipe) grid, so there is no 3-D grid to put both on.
    require(not (p.tensor_parallel > 1 and p.pipeline_parallel > 1), "parallel.pipeline_parallel",
            "tensor and pipeline parallelism cannot be combined (DeepSpeed AutoTP's (data, tensor) mesh has no "
            "pipeline axis)", "use either parallel.tensor_parallel or parallel.pipeline_parallel")
    precision = p.resolved_precision(c.use_gpu)
    require(c.use_gpu or precision in ("fp32", "bf16"), "parallel.precision",
            f"{precision} needs a GPU (cluster.use_gpu=false)", "use parallel.precision=auto or fp32 on CPU")
    if m.pretrained and not is_remote_uri(m.pretrained):
        require(Path(m.pretrained).is_dir(), "model.pretrained", f"{m.pretrained!r} is not a directory",
                "point to a Hugging Face model directory, or a models:/ or runs:/ MLflow URI")
    if cfg.data.path is not None:
        path = Path(cfg.data.path)
        require(path.exists(), "data.path", f"{cfg.data.path!r} does not exist",
                "run data_prep first, or point data.path at its output directory")
        manifest = path / "manifest.json"
        if manifest.exists():
            _validate_against_manifest(cfg, json.loads(manifest.read_text()))


def _validate_against_manifest(cfg: TrainJobConfig, manifest: dict) -> None:
    """Checks that need the dataset's manifest (written by data_prep)."""
    vocab = manifest.get("vocab_size")
    if vocab is not None:
        require(vocab <= cfg.model.vocab_size, "model.vocab_size",
                f"{cfg.model.vocab_size} is smaller than the tokenizer's vocabulary ({vocab})",
                f"set model.vocab_size>={vocab}")
    seq = manifest.get("seq_len")
    if seq is not None and manifest.get("format", "pretrain") == "pretrain":
        require(seq >= cfg.model.seq_len, "model.seq_len",
                f"{cfg.model.seq_len} is longer than the packed blocks ({seq} tokens)",
                f"set model.seq_len<={seq} or re-run data_prep with data.seq_len={cfg.model.seq_len}")


def check_train_batch(cfg: TrainJobConfig) -> None:
    """Kinds that train on one worker group: the global batch splits into micro-batches on every dp rank."""
    p, t = cfg.parallel, cfg.trainer
    dp = cfg.cluster.num_workers // (p.tensor_parallel * p.pipeline_parallel)
    per_step = p.micro_batch_size * dp
    require(t.global_batch_size % per_step == 0, "trainer.global_batch_size",
            f"{t.global_batch_size} is not divisible by parallel.micro_batch_size*dp = "
            f"{p.micro_batch_size}*{dp} = {per_step}",
            f"use a multiple of {per_step}, e.g. trainer.global_batch_size={per_step * max(1, t.global_batch_size // per_step)}")


def check_elastic(cfg: TrainJobConfig, worker_group: bool) -> None:
    """``cluster.min_workers`` below ``num_workers`` (elastic data parallelism): only where a restart can
    load the newest checkpoint at a smaller world size and keep the global batch.

    Raises:
        ConfigError: naming ``cluster.min_workers`` and the fix.
    """
    from orchestrator.config.plan import elastic_world_sizes

    c, p = cfg.cluster, cfg.parallel
    if c.min_workers is None or c.min_workers == c.num_workers:
        return
    key, off = "cluster.min_workers", "or cluster.min_workers=null (no elastic shrink)"
    require(worker_group, key, f"{cfg.kind} restarts its roles at their configured sizes (no elastic shrink)",
            "remove cluster.min_workers")
    require(cfg.trainer.max_failures >= 1, key, "a smaller group is only started by a restart after a failure, and "
            "trainer.max_failures=0 allows none", f"set trainer.max_failures>=1 {off}")
    # ZeRO-1/2/3 save each data-parallel rank's optimizer (and ZeRO-3 parameter) shard; DeepSpeed loads them only
    # at the world size that wrote them (its universal-checkpoint conversion is not wired in here). The pipeline
    # engine's bf16 optimizer shards the fp32 master weights over the data-parallel ranks the same way.
    require(p.zero_stage == 0, key, f"parallel.zero_stage={p.zero_stage} checkpoints hold per-rank optimizer shards "
            "that load only at the world size that wrote them", f"use parallel.zero_stage=0 for elastic training {off}")
    require(not (p.pipeline_parallel > 1 and p.resolved_precision(c.use_gpu) == "bf16"), key,
            "bf16 pipeline training shards its fp32 master weights over the data-parallel ranks (DeepSpeed's "
            "BF16_Optimizer), so its checkpoints load only at the world size that wrote them",
            f"use parallel.precision=fp32 {off}")
    mp = p.tensor_parallel * p.pipeline_parallel
    require(c.min_workers % mp == 0, key, f"{c.min_workers} is not a multiple of tensor_parallel*pipeline_parallel="
            f"{mp} (a restart keeps whole model-parallel groups)", f"use a multiple of {mp} {off}")
    require(bool(elastic_world_sizes(cfg)), key, f"no world size from {c.min_workers} to {c.num_workers - 1} splits "
            f"trainer.global_batch_size={cfg.trainer.global_batch_size} into micro-batches of "
            f"{p.micro_batch_size} per data-parallel rank", f"lower cluster.min_workers {off}")

"""Driver side of every DeepSpeed training job: the Ray Train worker group (the only Ray plumbing).

Public API:
    fit_worker_group(cfg, train_fn, train_loop_config) -> ray.train.Result
    refuse_unsupported_parallelism(cfg, job) -> None
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from orchestrator.config.errors import ConfigError
from orchestrator.config.jobs import TrainJobConfig


TP_JOBS = ("pretrain", "sft")
"""Jobs whose workers run DeepSpeed AutoTP (orchestrator.engine.tp): their objective is a plain forward."""
PP_JOBS = ("pretrain",)
"""Jobs whose workers run a PipelineModule (orchestrator.engine.pipe): the pipeline's loss is the causal-LM
loss on labels; SFT's masked/scaled loss and the pairwise objectives still need a whole-model forward."""


def refuse_unsupported_parallelism(cfg: TrainJobConfig, job: str) -> None:
    """Refuse tensor/pipeline parallelism before Ray starts for jobs that do not support it."""
    p = cfg.parallel
    lora = getattr(getattr(cfg, "sft", None), "lora_rank", 0)
    if job == "sft" and lora and p.tensor_parallel > 1:
        raise ConfigError("parallel.tensor_parallel", "LoRA adapters cannot be sharded by AutoTP",
                          "set sft.lora_rank=0 or parallel.tensor_parallel=1")
    for key, value, jobs in (("parallel.tensor_parallel", p.tensor_parallel, TP_JOBS),
                             ("parallel.pipeline_parallel", p.pipeline_parallel, PP_JOBS)):
        if value > 1 and job not in jobs:
            raise ConfigError(key, f"{value} is not supported by {job} yet (ZeRO data parallelism only)",
                              f"set {key}=1 and use parallel.zero_stage=0..3 to scale")


def ray_storage(cfg: TrainJobConfig) -> tuple[str, str]:
    """(storage_path, name) of the Ray Train run. Without ``cluster.storage_path`` the run directory *is*
    ``output_dir`` (its parent + its name), so our committed checkpoints lie inside Ray's experiment
    directory and are registered in place; with a storage path Ray copies each reported checkpoint there."""
    if cfg.cluster.storage_path:
        return cfg.cluster.storage_path, cfg.run_name
    out = Path(cfg.output_dir)
    return str(out.parent), out.name


def checkpoints_in_place(cfg: TrainJobConfig) -> bool:
    """Whether reported checkpoints are registered where they are (see :func:`ray_storage`)."""
    return not cfg.cluster.storage_path


def fit_worker_group(cfg: TrainJobConfig, train_fn: Callable[[dict[str, Any]], None],
                     train_loop_config: dict[str, Any]) -> Any:
    """Run ``train_fn`` on ``cluster.num_workers`` Ray Train workers and wait for it.

    gloo on CPU / NCCL on GPU; ``trainer.max_failures`` restarts the whole group (the workers resume
    from the newest reported checkpoint). Must run inside :func:`orchestrator.runtime.ray_runtime.ray_session`.

    Raises:
        ray.train.TrainingFailedError: the group failed more than ``max_failures`` times.
    """
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from orchestrator.quiet import verbose

    c = cfg.cluster
    storage, name = ray_storage(cfg)
    if checkpoints_in_place(cfg):
        # A job stopped mid-run (`orchestrator stop`: SIGTERM) leaves Ray Train's snapshot naming
        # checkpoints our CheckpointManager has since pruned, and a new fit() refuses such a run
        # directory. Resume across jobs is ours (resolve_resume -> resume_dir), so start Ray's fresh.
        (Path(storage) / name / "checkpoint_manager_snapshot.json").unlink(missing_ok=True)
    trainer = TorchTrainer(
        train_fn,
        train_loop_config=train_loop_config,
        torch_config=TorchConfig(backend="nccl" if c.use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=c.num_workers, use_gpu=c.use_gpu,
                                     resources_per_worker={"CPU": c.cpus_per_worker}),
        run_config=RunConfig(
            name=name, storage_path=storage,
            failure_config=FailureConfig(max_failures=cfg.trainer.max_failures),
            # Checkpoints are committed and pruned by our CheckpointManager; Ray only references them.
            checkpoint_config=CheckpointConfig(num_to_keep=None),
            # Ray Train's per-report INFO lines are noise next to our own step logging.
            logging_config=None if verbose() else LoggingConfig(log_level="WARNING"),
        ),
    )
    return trainer.fit()

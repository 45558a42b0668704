"""LLM training orchestrator on Ray: typed Hydra configs, DeepSpeed workers, MLflow tracking."""

__version__ = "0.1.0"

JOB_KINDS = ("data_prep", "pretrain", "sft", "reward_model", "ppo", "dpo", "pipeline")
"""The one name of each job kind: module, jobs/ file, primary config and MLflow tag."""

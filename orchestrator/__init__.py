"""LLM training orchestrator on Ray: typed Hydra configs, DeepSpeed workers, MLflow tracking."""

import os as _os

# Secure by default: Ray token authentication on for every Ray runtime this package starts or joins.
# Ray reads the mode when it is first imported, so it is set here, before any ``import ray``.
# Export RAY_AUTH_MODE=disabled explicitly to talk to a legacy cluster without auth.
_os.environ.setdefault("RAY_AUTH_MODE", "token")

__version__ = "0.1.0"

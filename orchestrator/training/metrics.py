"""Pure training-metric helpers: MFU, gradient norm, and the per-step record file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


def mfu(num_params: int, tokens_per_s: float, peak_tflops_per_worker: float, num_workers: int) -> float:
    """Model FLOPs utilisation: ``6 * N * tokens/s`` (forward + backward of a dense decoder, attention
    FLOPs ignored) over the aggregate peak ``peak_tflops_per_worker * num_workers``."""
    peak = peak_tflops_per_worker * 1e12 * num_workers
    return 6.0 * num_params * tokens_per_s / peak if peak > 0 else 0.0


def grad_norm(module: "torch.nn.Module") -> float:
    """Global L2 norm of the (already data-parallel reduced) gradients of ``module``."""
    import torch  # not at module level: the driver reads StepLog without torch (#13)

    norms = [p.grad.detach().float().norm(2) for p in module.parameters() if p.grad is not None]
    if not norms:
        return float("nan")
    return float(torch.stack(norms).double().norm(2))  # one device sync


class StepLog:
    """Append-only JSONL of ``{"step": k, **metrics}``; reading keeps the last record of each step, so a
    step recomputed after a recovery replaces the one written before the failure."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def append(self, step: int, metrics: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")
            f.flush()

    def read(self) -> dict[int, dict[str, Any]]:
        out: dict[int, dict[str, Any]] = {}
        if not self.path.exists():
            return out
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:  # a line torn by a crash
                continue
            out[int(rec.pop("step"))] = rec
        return dict(sorted(out.items()))


def read_steps(output_dir: str) -> dict[int, dict[str, float]]:
    """The per-step metrics rank 0 recorded (a recomputed step's last record wins)."""
    return StepLog(Path(output_dir) / "steps.jsonl").read()

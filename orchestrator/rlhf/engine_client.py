"""The driver's side of the rollout engines, shared by the RL controllers (``ppo``, ``grpo``).

Both kinds generate through the same three steps, so both use this mixin rather than their own copies:

* :meth:`EngineRollouts.rollout_responses` - shard left-padded prompts over the actor ranks, each rank's
  engine samples (``rollout.engine=hf|vllm``, :mod:`.rollout_engines`; the version check runs there), and
  return the responses ``[B, R]`` plus each rank's engine log-probs (None for ``hf``);
* :meth:`EngineRollouts.sync_rollout_engines` - after every step that updated the actor, each rank pushes
  its (ZeRO-gathered) weights into its engine and records the new version;
* :meth:`EngineRollouts.after_load` - the same after a checkpoint was loaded (resume, recovery), so a
  resumed engine never samples from the initial weights.

The engine's log-probs then go to :func:`orchestrator.rlhf.mismatch.engine_mismatch` (mismatch metrics,
truncated importance-sampling weights) once the actor's own log-probs are known.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from orchestrator.rlhf.rollout import pad_right, shard_rows


class EngineRollouts:
    """Mixin of a :class:`~.controller.RoleController` whose ``actor`` role generates (a ``PolicyRole``)."""

    groups: dict[str, Any]

    def rollout_responses(self, prompts: dict[str, torch.Tensor], seed: int, stop: int | list[int],
                          pad_id: int) -> tuple[torch.Tensor, list[Optional[torch.Tensor]]]:
        """``responses [B, R]`` (right-padded over the ranks) and the engine log-probs of each rank's rows
        (in row order; None entries for ``hf``). Raises ``StaleRolloutEngineError`` (from the rank) when a
        weight sync was skipped."""
        import ray

        g = self.groups["actor"]
        shards = shard_rows(prompts, len(g)) if len(g) > 1 else [prompts]
        outs = ray.get([w.rollout.remote(s, seed, stop, pad_id) for w, s in zip(g.workers, shards)])
        return pad_right([o["responses"] for o in outs], pad_id), [o["logprobs"] for o in outs]

    def sync_rollout_engines(self) -> None:
        """Weights of every actor rank into its rollout engine (for ``hf`` only the version moves)."""
        import ray

        ray.get(self.groups["actor"].call("sync_rollout_engine"))

    def after_load(self) -> None:
        """A checkpoint was loaded into the roles (resume, recovery): the engines take the actor's weights."""
        self.sync_rollout_engines()

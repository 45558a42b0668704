"""The driver's side of the rollout engines, shared by the RL controllers (``ppo``, ``grpo``).

Both kinds generate through the same three steps, so both use this mixin rather than their own copies:

* :meth:`EngineRollouts.rollout_responses` - shard left-padded prompts over the actor ranks, each rank's
  engine samples (``rollout.engine=hf|vllm``, :mod:`.rollout_engines`; the version check runs there), and
  return the responses ``[B, R]`` plus each rank's engine log-probs (None for ``hf``);
* :meth:`EngineRollouts.sync_rollout_engines` - after every step that updated the actor, each rank pushes
  its (ZeRO-gathered) weights into its engine and records the new version;
* :meth:`EngineRollouts.after_load` - the same after a checkpoint was loaded (resume, recovery), so a
  resumed engine never samples from the initial weights.

With ``rollout.layout=separate`` the same three calls drive a ``rollout`` role group instead
(:class:`~.engine_role.RolloutEngineRole`, ``rollout.num_engines`` ranks in a placement group of their own,
started beside the other roles and connected to actor rank 0 by the broadcast group of :mod:`.weight_sync`):
the prompts are sharded over the engines, each engine checks its weights version against the actor's
before it samples, and a sync is one broadcast from actor rank 0 into every engine. A dead engine is a dead
role like any other: the controller's recovery restarts every role (the engines with it), reconnects the
broadcast group and, after loading the last checkpoint, syncs the engines (:meth:`after_load`).

The engine's log-probs then go to :func:`orchestrator.rlhf.mismatch.engine_mismatch` (mismatch metrics,
truncated importance-sampling weights) once the actor's own log-probs are known.
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from orchestrator.rlhf.rollout import pad_right, shard_rows


ENGINE_ROLE = "rollout"
"""Name of the separate engines' role group (in ``controller.groups``)."""


def get_all(refs: list) -> list:
    """``ray.get(refs)``, but raising as soon as any of them failed: the peers of a collective (a broadcast
    whose receiver died) would otherwise keep the driver waiting for their timeout."""
    import ray

    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        ray.get(done)
    return ray.get(list(refs))


class EngineRollouts:
    """Mixin of a :class:`~.controller.RoleController` whose ``actor`` role generates (a ``PolicyRole``)."""

    groups: dict[str, Any]

    def separate_engines(self) -> bool:
        """Whether the engines are their own role group (``rollout.engine=vllm``, ``rollout.layout=separate``)."""
        r = getattr(getattr(self, "cfg", None), "rollout", None)
        return r is not None and r.engine == "vllm" and r.layout == "separate"

    # ------------------------------------------------------------------ the separate engines' role group
    def start_extra_groups(self) -> dict[str, Any]:
        """The ``rollout`` group in a placement group of its own (``num_engines`` bundles of
        ``cpus_per_engine``/``gpus_per_engine``), its engines starting while the other roles do."""
        if not self.separate_engines():
            return {}
        import ray
        from ray.util.placement_group import placement_group

        from orchestrator.config.rlhf import RoleConfig
        from orchestrator.rlhf.engine_role import RolloutEngineRole
        from orchestrator.rlhf.placement import RoleGroup, _bundle

        r, cluster = self.cfg.rollout, self.cfg.cluster
        rc = RoleConfig(num_workers=r.num_engines, num_cpus=r.cpus_per_engine,
                        num_gpus=float(r.gpus_per_engine) if cluster.use_gpu else 0.0)
        pg = placement_group([_bundle(rc)] * r.num_engines, strategy=cluster.placement.upper())
        ray.get(pg.ready(), timeout=300)
        self.extra_pgs.append(pg)
        policy = self.policy_dir
        group = RoleGroup(ENGINE_ROLE, RolloutEngineRole, rc, pg, list(range(r.num_engines)),
                          lambda rank, n, m: ((self.cfg, policy), dict(rank=rank, world_size=n, master=m)), self.env)
        return {ENGINE_ROLE: group}

    def start_roles(self) -> None:
        super().start_roles()  # type: ignore[misc]
        if self.separate_engines():
            self.connect_engines()

    def connect_engines(self) -> None:
        """Form the broadcast group (actor rank 0 = group rank 0, engine i = 1 + i; its store on actor rank 0's
        node) and fetch the parameter list every sync sends."""
        import ray

        from orchestrator.runtime.worker_group import identify

        actor, engines = self.groups["actor"], self.groups[ENGINE_ROLE]
        host0 = actor.hosts[0]
        same_node = all(h.node_id == host0.node_id for h in engines.hosts)
        addr = "127.0.0.1"
        if not same_node:
            identify([host0])
            addr = host0.ip
        master = f"{addr}:{ray.get(host0.actor.free_port.remote())}"
        world = 1 + len(engines)
        get_all(actor.call("init_weight_group", master, world) + engines.call("init_weight_group", master, world))
        self.weight_meta = ray.get(actor.workers[0].weight_meta.remote())

    def actor_version(self) -> int:
        import ray

        return ray.get(self.groups["actor"].workers[0].get_weights_version.remote())

    # ------------------------------------------------------------------ rollouts and syncs
    def rollout_responses(self, prompts: dict[str, torch.Tensor], seed: int, stop: int | list[int],
                          pad_id: int) -> tuple[torch.Tensor, list[Optional[torch.Tensor]]]:
        """``responses [B, R]`` (right-padded over the ranks) and the engine log-probs of each rank's rows
        (in row order; None entries for ``hf``). Raises ``StaleRolloutEngineError`` (from the rank) when a
        weight sync was skipped."""
        import ray

        if self.separate_engines():
            g, version = self.groups[ENGINE_ROLE], self.actor_version()
            shards = shard_rows(prompts, len(g)) if len(g) > 1 else [prompts]
            outs = get_all([w.rollout.remote(s, seed, stop, pad_id, version) for w, s in zip(g.workers, shards)])
            return pad_right([o["responses"] for o in outs], pad_id), [o["logprobs"] for o in outs]
        g = self.groups["actor"]
        shards = shard_rows(prompts, len(g)) if len(g) > 1 else [prompts]
        outs = ray.get([w.rollout.remote(s, seed, stop, pad_id) for w, s in zip(g.workers, shards)])
        return pad_right([o["responses"] for o in outs], pad_id), [o["logprobs"] for o in outs]

    def sync_rollout_engines(self) -> None:
        """Weights of every actor rank into its rollout engine (for ``hf`` only the version moves); separate:
        one broadcast from actor rank 0 into every engine, skipped when every engine already holds the
        actor's version."""
        import ray

        if self.separate_engines():
            engines, version = self.groups[ENGINE_ROLE], self.actor_version()
            if all(v == version for v in ray.get(engines.call("version"))):
                return
            get_all(self.groups["actor"].call("broadcast_weights")
                    + engines.call("receive_weights", self.weight_meta, version))
            return
        ray.get(self.groups["actor"].call("sync_rollout_engine"))

    def after_load(self) -> None:
        """A checkpoint was loaded into the roles (resume, recovery): the engines take the actor's weights."""
        self.sync_rollout_engines()

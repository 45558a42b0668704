"""The role controller shared by the RL kinds (``ppo``, ``grpo``): roles, the step loop, checkpoints, recovery.

A subclass says what its step is (:meth:`RoleController.step_stats`), which roles it starts
(:meth:`RoleController.role_specs`), which of them are trained (and so checkpointed) and what driver
state a step depends on (:meth:`RoleController.state_dict`). This class owns the rest, once:

* the loop over ``trainer.max_steps``, each step's record in ``steps.jsonl`` and MLflow (idempotent per
  step, so a replayed step is logged once), sample tables every ``sample_every`` steps, and atomic
  checkpoints every ``trainer.save_every`` steps (:mod:`.ppo_checkpoint`);
* resume (``resume=auto``: the newest committed checkpoint) and recovery: when a role actor dies the
  controller ends every role, starts them again (in the surviving roles' processes where those are
  healthy, new processes for the lost ones) and recomputes from the last committed checkpoint,
  at most ``trainer.max_failures`` times. Everything random in a step derives from (seed, step), so
  the recomputed steps equal the lost ones.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable

import torch

from orchestrator.config.jobs import checkpoint_root
from orchestrator.core.timing import Phases, record_startup, startup_line
from orchestrator.rlhf.placement import RoleGroup, create_placement_group, shares_processes
from orchestrator.rlhf.ppo_checkpoint import find_resume_checkpoint, load_ppo_state, save_ppo_checkpoint
from orchestrator.rlhf.rollout import pad_right, shard_rows
from orchestrator.training.metrics import StepLog

log = logging.getLogger(__name__)

RECOVERY_RELEASE_S = 10.0
"""How long a surviving role's ranks may take to finish what they were doing and release, when the roles restart
after a loss, before their processes are killed instead of reused."""

RoleSpec = tuple[type, Callable[[int, int, str], tuple[tuple, dict]]]
"""A role's class and ``make_args(rank, world_size, master) -> (args, kwargs)`` of its constructor."""


class RoleController:
    """Base of the RL controllers (see the module docstring).

    Args:
        cfg: the frozen job config; its options group is ``getattr(cfg, cfg.kind)``.
        tokenizer_dir: tokenizer of the policy.
        tracker: a :class:`~orchestrator.tracking.JobTracker` (or an object with the same logging API).
        env: environment variables of the role actors.
    """

    fault_role = "actor"
    """The role whose actor ``trainer.fail_at_step`` kills (fault-injection tests)."""

    def __init__(self, cfg: Any, *, tokenizer_dir: str, tracker: Any, env: dict[str, str]) -> None:
        from orchestrator.data.tokenizer import load_tokenizer
        self.cfg, self.p = cfg, getattr(cfg, cfg.kind)
        self.tokenizer_dir, self.tracker, self.env = tokenizer_dir, tracker, env
        self.tok = load_tokenizer(tokenizer_dir)
        self.out = Path(cfg.output_dir)
        self.ckpt_root = checkpoint_root(cfg)
        self.steplog = StepLog(self.out / "steps.jsonl")
        self.groups: dict[str, RoleGroup] = {}
        self.pg = None
        self.extra_pgs: list[Any] = []  # placement groups of start_extra_groups' role groups
        self.step = 0
        self.phases = Phases()
        """Wall seconds of the job's phases (the ``startup.*`` breakdown); the kind adds its own before the roles."""

    # ------------------------------------------------------------------ what a subclass provides
    def reset_state(self) -> None:
        """Driver state of a fresh run (step 0)."""
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_state_dict(self, st: dict[str, Any]) -> None:
        raise NotImplementedError

    def role_specs(self) -> dict[str, RoleSpec]:
        """The roles to start, in placement order."""
        raise NotImplementedError

    def trained_roles(self) -> tuple[str, ...]:
        """Roles whose engines (weights, optimizer, schedule) are checkpointed."""
        return ("actor",)

    def step_stats(self, step: int) -> tuple[dict[str, float], Any]:
        """Run one step; returns its metrics and what :meth:`sample_table` needs."""
        raise NotImplementedError

    def sample_table(self, step: int, samples: Any) -> dict[str, list]:
        """Columns of the step's sample table."""
        raise NotImplementedError

    def start_extra_groups(self) -> dict[str, RoleGroup]:
        """Role groups with placement groups of their own (appended to ``extra_pgs``), started with the roles
        (the separate rollout engines, :class:`~.engine_client.EngineRollouts`); none by default."""
        return {}

    def on_roles_started(self) -> None:
        """Hook after (re)starting the roles, before any checkpoint is loaded."""

    def after_load(self) -> None:
        """Hook after a checkpoint was loaded into the roles (resume, recovery)."""

    # ------------------------------------------------------------------ roles
    def start_roles(self) -> None:
        """(Re)create the placement group and the role actors from the initial models."""
        import ray

        self.stop_roles()
        specs = self.role_specs()
        self.pg, index = create_placement_group(self.p, tuple(specs), self.cfg.cluster.placement)
        self.groups = {}
        trained = self.trained_roles()
        for name in sorted(specs, key=lambda n: n != "actor"):  # the actor first: frozen roles may join its hosts
            cls, make = specs[name]
            share = self.groups["actor"].hosts if shares_processes(self.p, name, trained) else None
            self.groups[name] = RoleGroup(name, cls, getattr(self.p, name), self.pg, index[name], make, self.env,
                                          share_hosts=share)
        self.groups.update(self.start_extra_groups())
        ray.get([f for g in self.groups.values() for f in g.ready()])  # every role starts in parallel
        self.record_placement()
        self.on_roles_started()

    def record_placement(self) -> None:
        """``placement.json``: the node and process id of every role rank (rewritten when a recovery restarts the
        roles), so a multi-node run shows which roles share a node and where they went after a node loss, and a
        recovery which processes it kept."""
        import json

        from orchestrator.core.files import atomic_write_text
        from orchestrator.runtime.worker_group import identify

        identify([h for g in self.groups.values() for h in g.hosts])
        where = [{"role": name, "rank": r, "node_id": h.node_id, "pid": h.pid} for name, g in self.groups.items()
                 for r, h in enumerate(g.hosts)]
        self.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.out / "placement.json", json.dumps(where, indent=1))

    def stop_roles(self, healthy: bool = False, recovering: bool = False) -> None:
        """End the roles and release their placement group. ``healthy`` (the job finished normally): their
        warm hosts go back to the pool for the next job. ``recovering`` (a role died; the roles restart): the
        hosts of every role whose ranks all release within :data:`RECOVERY_RELEASE_S` go back to the pool, so
        the restarted roles start only the lost processes again (a role with a dead rank, or one still busy in
        a collective with a dead peer, is killed whole). Otherwise (a failure) they are killed."""
        from ray.util.placement_group import remove_placement_group

        reuse = (healthy or recovering) and self.reusable_hosts()
        kept = []
        for name, g in self.groups.items():
            if reuse and g.owns_hosts and g.give_back(60.0 if healthy else RECOVERY_RELEASE_S):
                kept.append(f"{name} (pids {' '.join(str(h.pid) for h in g.hosts)})")
            elif g.owns_hosts:
                g.kill()
        if recovering and self.groups:
            log.info("roles restarting: processes kept for %s", ", ".join(kept) or "no role")
        self.groups = {}
        for pg in [self.pg, *self.extra_pgs]:
            if pg is not None:
                try:
                    remove_placement_group(pg)
                except Exception:
                    pass
        self.pg, self.extra_pgs = None, []

    def reusable_hosts(self) -> bool:
        """Whether the role hosts may serve another job: not after an in-process vLLM engine (its engine
        processes and memory are not reliably released)."""
        rollout = getattr(self.cfg, "rollout", None)
        return getattr(rollout, "engine", "hf") == "hf"

    def _trained(self) -> list[RoleGroup]:
        return [self.groups[name] for name in self.trained_roles()]

    def gather(self, name: str, method: str, batch: dict[str, Any], pad: float = 0.0) -> Any:
        """``method`` on the role's ranks, each on its contiguous share of ``batch``; results concatenated."""
        import ray

        g = self.groups[name]
        outs = ray.get(g.call_sharded(method, shard_rows(batch, len(g)) if len(g) > 1 else [batch]))
        if isinstance(outs[0], dict):
            return {k: torch.cat([o[k] for o in outs]) for k in outs[0]}
        return pad_right(outs, pad) if outs[0].dim() == 2 else torch.cat(outs)

    def maybe_inject_failure(self, step: int) -> None:
        """``trainer.fail_at_step``: the :attr:`fault_role` actor's process dies mid-step, once (marker file)."""
        fail = self.cfg.trainer.fail_at_step
        if fail is None or step != fail:
            return
        marker = self.out / f".fail_at_step_{step}.done"
        if marker.exists():
            return
        marker.write_text("injected\n")
        log.warning("[fault injection] killing the %s role at step %d", self.fault_role, step)
        self.groups[self.fault_role].workers[0].die.remote()

    # ------------------------------------------------------------------ loop
    def run(self) -> dict[str, Any]:
        import ray

        cfg = self.cfg
        resume_from = find_resume_checkpoint(self.ckpt_root, cfg.resume)
        failures, recoveries = 0, 0
        if resume_from is None:  # a fresh run forgets step records of an earlier attempt without checkpoints
            self.steplog.path.unlink(missing_ok=True)
        self.reset_state()
        with self.phases.phase("roles_start"):  # placement, role processes (their imports), models, engines
            self.start_roles()
        if resume_from is not None:
            with self.phases.phase("restore"):
                self.load_state_dict(load_ppo_state(resume_from, self._trained()))
                self.after_load()
        last: dict[str, float] = {}
        with self.phases.phase("train_loop"):  # the whole loop: first step, checkpoints and recoveries included
            while self.step < cfg.trainer.max_steps:
                step = self.step + 1
                try:
                    t_step = time.perf_counter()
                    last = self._one_step(step)
                    if "first_step" not in self.phases.seconds:
                        self.phases.add("first_step", last["step_time_s"])  # rollout + update, no checkpoint
                except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
                    failures += 1
                    if failures > cfg.trainer.max_failures:
                        raise RuntimeError(f"{cfg.kind} role failed {failures} times (trainer.max_failures="
                                           f"{cfg.trainer.max_failures}); last error: {exc}") from exc
                    log.warning("a %s role died at step %d (%s); recovering from the last checkpoint", cfg.kind,
                                step, exc)
                    recoveries += 1
                    self._recover()
                    self.phases.add("recovery", time.perf_counter() - t_step)  # failed step start -> roles restored
        return {"steps": self.step, "failures_recovered": recoveries, "last_metrics": last}

    def _recover(self, attempts: int = 5) -> None:
        """Fresh roles from the last committed checkpoint. A start that loses a role again (its node died
        after the placement was granted, before Ray noticed the loss) is retried after a pause: such
        retries wait for capacity and do not count as failures."""
        import ray

        for attempt in range(1, attempts + 1):
            self.stop_roles(recovering=True)
            self.reset_state()
            try:
                self.start_roles()
                break
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
                if attempt == attempts:
                    raise
                log.warning("a %s role was lost while the roles restarted (%s); starting them again", self.cfg.kind, exc)
                time.sleep(min(30.0, 2.0 * attempt))
        ckpt = find_resume_checkpoint(self.ckpt_root, "auto")
        if ckpt is not None:
            self.load_state_dict(load_ppo_state(ckpt, self._trained()))
            self.after_load()

    def _one_step(self, step: int) -> dict[str, float]:
        cfg = self.cfg
        t0 = time.perf_counter()
        stats, samples = self.step_stats(step)
        stats["step_time_s"] = time.perf_counter() - t0
        self.step = step
        self.steplog.append(step, stats)
        if step % cfg.trainer.log_every == 0:
            self.tracker.log_metrics(stats, step)
        if step % self.p.sample_every == 0 or step == cfg.trainer.max_steps:
            self.log_samples(step, samples)
        if step == cfg.trainer.max_steps or (cfg.trainer.save_every and step % cfg.trainer.save_every == 0):
            with self.phases.phase("checkpoint"):
                save_ppo_checkpoint(self.ckpt_root, step, self._trained(), self.state_dict(),
                                    cfg.trainer.keep_checkpoints)
        return stats

    # ------------------------------------------------------------------ outputs
    def log_samples(self, step: int, samples: Any) -> None:
        """The step's sample table as ``samples/step_<k>.json`` (MLflow artifact + local copy; a replayed step
        rewrites its table)."""
        from orchestrator.tracking.samples import log_sample_table

        log_sample_table(getattr(self.tracker, "client", None), self.tracker.run_id, self.sample_table(step, samples),
                         step, self.out)

    def export(self, out_dir: Path) -> Path:
        """The actor's weights plus the tokenizer files (the chat template with them), as a Hugging Face model dir."""
        import ray

        from orchestrator.core.files import copy_tokenizer

        from orchestrator.runtime.worker_group import driver_node, unpack_dir

        out_dir.mkdir(parents=True, exist_ok=True)
        host = self.groups["actor"].hosts[0]
        if host.node_id == driver_node():
            ray.get(self.groups["actor"].workers[0].export.remote(str(out_dir)))
        else:  # the actor's node may not share the driver's disk: export there, then bring the files here
            remote = f"{out_dir}.from-{host.node_id[:12]}"
            ray.get(self.groups["actor"].workers[0].export.remote(remote))
            unpack_dir(ray.get(host.actor.pack_dir.remote(remote, remove=True)), out_dir)
        copy_tokenizer(self.tokenizer_dir, out_dir)
        return out_dir

    def fingerprints(self) -> dict[str, float]:
        import ray

        return {"actor": ray.get(self.groups["actor"].workers[0].state_fingerprint.remote())}


def run_roles_and_export(ctl: "RoleController", cfg: Any, tracker: Any, tags: dict[str, str], out: Path,
                         phases: Phases | None = None) -> dict[str, Any]:
    """What a role-controller kind (ppo, grpo) does inside its MLflow run and Ray session: run the loop
    with a progress line, export and register the actor, stop the roles; returns the job's result.

    ``phases``: what the kind timed before the roles (inputs, Ray start, prompts, MLflow run); the job's whole
    breakdown (:func:`orchestrator.core.timing.record_startup`) is logged at step 0, written to
    ``startup.json``, printed as one line and returned as ``startup``."""
    from orchestrator.core.console import StepProgress, say

    if phases is not None:
        ctl.phases = phases
    healthy = False
    try:
        with StepProgress(cfg.kind, out / "steps.jsonl", cfg.trainer.max_steps):
            summary = ctl.run()
        with ctl.phases.phase("export"):
            export_dir = ctl.export(out / "export") if cfg.trainer.export else None
        fingerprint = ctl.fingerprints()["actor"]
        healthy = True
    finally:
        with ctl.phases.phase("teardown"):
            ctl.stop_roles(healthy)
    with ctl.phases.phase("register"):
        version = tracker.register_model(export_dir, cfg.run_name, tags) if export_dir else None
    startup = record_startup(out, ctl.phases.seconds)
    tracker.log_metrics(startup, 0)
    say(startup_line(cfg.kind, startup))
    last = summary["last_metrics"]
    return {"run_id": tracker.run_id, "output_dir": str(out), "export_dir": str(export_dir) if export_dir else None,
            "model_version": version, "model_name": cfg.run_name if version else None,
            "actor_fingerprint": fingerprint, "metrics": last, "final_reward_mean": last.get("reward_mean"),
            "startup": startup, **summary}

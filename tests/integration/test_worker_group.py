"""Training ranks on warm hosts, on the session's real Ray: rank numbering and torch.distributed wiring, reuse of
the warm processes by the next job (and not across environments), restarts after a lost rank, the error that
names the failing rank, and CPUs reserved only while a job runs."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest
import ray.cloudpickle

from orchestrator.runtime.rank_group import run_on_group
from orchestrator.runtime.worker_group import GroupSpec, WorkerGroupError, rank_context

pytestmark = pytest.mark.slow

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the worker processes cannot import this file

SPEC = GroupSpec(num_workers=2, env=(("OMP_NUM_THREADS", "1"), ("ORCHESTRATOR_TEST_MARK", "group-a")))


def _whoami(config: dict) -> dict:
    import torch
    import torch.distributed as dist

    ctx = rank_context()
    t = torch.tensor([float(ctx.rank + 1)])
    dist.all_reduce(t)  # the process group is really wired between the ranks
    return {"rank": ctx.rank, "world": ctx.world_size, "local_rank": ctx.local_rank, "pid": os.getpid(),
            "env_rank": os.environ["RANK"], "mark": os.environ.get("ORCHESTRATOR_TEST_MARK"), "sum": float(t),
            "tag": config["tag"]}


def _die_once(config: dict) -> int:
    ctx = rank_context()
    marker = Path(config["dir"]) / "died"
    if ctx.rank == 1 and not marker.exists():
        marker.write_text("x")
        os._exit(1)
    return os.getpid()


def _fails(config: dict) -> None:
    if rank_context().rank == 1:
        raise ValueError("bad shard 7 in user data")


def test_ranks_are_wired_and_warm_processes_are_reused(ray_local):
    first = run_on_group(SPEC, _whoami, {"tag": 1})
    assert [r["rank"] for r in first] == [0, 1] and {r["world"] for r in first} == {2}
    assert [r["env_rank"] for r in first] == ["0", "1"] and [r["local_rank"] for r in first] == [0, 1]
    assert {r["sum"] for r in first} == {3.0} and {r["mark"] for r in first} == {"group-a"}
    second = run_on_group(SPEC, _whoami, {"tag": 2})
    assert [r["pid"] for r in second] == [r["pid"] for r in first]  # the same warm processes, no new start
    assert [r["tag"] for r in second] == [2, 2]
    other = run_on_group(GroupSpec(num_workers=2, env=(("ORCHESTRATOR_TEST_MARK", "group-b"),)), _whoami, {"tag": 3})
    assert {r["mark"] for r in other} == {"group-b"}  # another layout: another group
    assert not {r["pid"] for r in other} & {r["pid"] for r in first}


def test_a_lost_rank_restarts_the_group_and_a_failing_one_is_named(ray_local, tmp_path):
    import ray

    pids = run_on_group(SPEC, _die_once, {"dir": str(tmp_path)}, max_failures=1)
    assert (tmp_path / "died").exists() and len(set(pids)) == 2
    with pytest.raises(WorkerGroupError, match=r"rank 1 of 2 .*ValueError: bad shard 7 in user data"):
        run_on_group(SPEC, _fails, {}, max_failures=0, what="sft worker group")
    (tmp_path / "died").unlink()
    with pytest.raises(WorkerGroupError, match=r"max_failures=0.*rank 1 of 2 .*worker process died"):
        run_on_group(SPEC, _die_once, {"dir": str(tmp_path)}, max_failures=0)
    again = run_on_group(SPEC, _whoami, {"tag": 4})
    assert {r["sum"] for r in again} == {3.0}  # a new process group on the hosts the failures left
    deadline = time.time() + 30
    while ray.available_resources().get("CPU", 0) < 2 and time.time() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU", 0) >= 2  # idle hosts hold no CPUs: the job's reservation is gone


def _never_runs(config: dict) -> None:
    raise AssertionError("the function ran although the process group never formed")


def test_a_group_that_cannot_form_is_formed_again_uncounted_then_named(ray_local, caplog):
    """Gloo told to use a network interface this machine lacks: every attempt's rendezvous fails before the
    function runs. Such a group is formed again on new hosts RENDEZVOUS_RETRIES times without counting a
    failure, then counted like any failure, and the error says the rank could not join."""
    import logging

    from orchestrator.runtime.rank_group import RENDEZVOUS_RETRIES

    spec = GroupSpec(num_workers=1, env=(("GLOO_SOCKET_IFNAME", "nosuchif0"), ("OMP_NUM_THREADS", "1")))
    with caplog.at_level(logging.WARNING, logger="orchestrator.runtime.rank_group"):
        with pytest.raises(WorkerGroupError, match=r"failed 1 time\(s\) \(max_failures=0\); rank 0 of 1 .*"
                                                   r"RendezvousError: rank 0 could not join the process group"):
            run_on_group(spec, _never_runs, {}, max_failures=0)
    retries = [r for r in caplog.records if "forming the group again" in r.getMessage()]
    assert len(retries) == RENDEZVOUS_RETRIES == 2, [r.getMessage() for r in caplog.records]


class _Tally:
    """A stand-in role object: counts its calls, says which process it lives in."""

    def __init__(self, tag: str, rank: int = 0, world_size: int = 1, master: str = "") -> None:
        self.tag, self.rank, self.calls = tag, rank, 0

    def bump(self) -> tuple:
        self.calls += 1
        return self.tag, self.rank, self.calls, os.getpid()


def test_frozen_roles_share_the_actor_processes_and_only_the_owner_returns_them(ray_local):
    """``share_processes``: rank r of a frozen role is a second object in actor rank r's host; each object keeps
    its own state, and the shared hosts go back to the pool once (by the actor's group)."""
    from types import SimpleNamespace

    from ray.util.placement_group import placement_group, remove_placement_group

    from orchestrator.rlhf.placement import RoleGroup, shares_processes
    from orchestrator.runtime import worker_group

    opts = SimpleNamespace(colocate=True, share_processes=True)
    assert shares_processes(opts, "reference", ("actor", "critic"))
    assert not shares_processes(opts, "critic", ("actor", "critic"))  # trained: own processes and group
    assert not shares_processes(SimpleNamespace(colocate=False, share_processes=True), "reward", ("actor",))
    assert not shares_processes(SimpleNamespace(colocate=True, share_processes=False), "reward", ("actor",))

    role = SimpleNamespace(num_workers=2, num_cpus=0.25, num_gpus=0)
    pg = placement_group([{"CPU": 1.0}], strategy="STRICT_PACK")
    ray.get(pg.ready(), timeout=120)
    env = {"OMP_NUM_THREADS": "1", "ORCHESTRATOR_TEST_MARK": "roles"}
    try:
        actor = RoleGroup("actor", _Tally, role, pg, [0, 0], lambda r, n, m: (("actor",), {"rank": r}), env)
        ref = RoleGroup("reference", _Tally, SimpleNamespace(num_workers=3, num_cpus=0.25, num_gpus=0), pg,
                        [0, 0, 0], lambda r, n, m: (("ref",), {"rank": r}), env, share_hosts=actor.hosts)
        ray.get(actor.ready() + ref.ready())
        a = ray.get(actor.call("bump"))
        r1 = ray.get(ref.call("bump"))
        r2 = ray.get(ref.call("bump"))
        assert [x[:3] for x in a] == [("actor", 0, 1), ("actor", 1, 1)]
        assert [x[:3] for x in r2] == [("ref", 0, 2), ("ref", 1, 2), ("ref", 2, 2)]
        # ref rank r lives in actor rank r mod 2's process; the two actor ranks are two processes
        assert [x[3] for x in r1] == [a[0][3], a[1][3], a[0][3]] and a[0][3] != a[1][3]
        before = len(worker_group._idle())
        ref.give_back()  # a sharing group returns nothing
        assert len(worker_group._idle()) == before
        actor.give_back()
        idle_pids = {ray.get(h.actor.info.remote())["pid"] for h in worker_group._idle()}
        assert {a[0][3], a[1][3]} <= idle_pids
    finally:
        remove_placement_group(pg)


def test_a_warm_host_and_a_fresh_one_number_zero3_modules_alike(ray_local, tmp_path):
    """ZeRO-3 numbers modules and parameters with process-wide counters and checks that every rank got the
    same numbers. A ZeRO-3 job whose group mixes a host that ran a ZeRO-3 job before with a fresh one (a
    restart after a failure borrows what the pool has) must train: the warm host's counters were reset when
    it was given back."""
    from orchestrator.kinds import load
    from orchestrator.kinds.pretrain import run as run_pretrain
    from orchestrator.runtime import worker_group

    def job(name: str) -> dict:
        return run_pretrain(load("pretrain", [f"workspace={tmp_path}", f"run_name={name}", "parallel=zero3",
                                              "trainer.max_steps=2", "trainer.save_every=0", "trainer.export=false",
                                              "trainer.global_batch_size=8", "trainer.eval_batches=1"]))

    job("z3_first")
    idle = worker_group._idle()
    warm = idle[-1]  # given back last: a host of the job above
    worker_group.kill_hosts([h for h in idle if h is not warm])
    idle[:] = [warm]
    second = job("z3_mixed")  # one warm host, one new process
    assert sorted(second["losses"]) == [1, 2]
    after = worker_group._idle()
    assert warm in after and any(h.pid != warm.pid for h in after)  # the warm host and a new one ran the job

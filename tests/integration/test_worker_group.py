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

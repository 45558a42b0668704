"""A driver that reserves, borrows and wires worker groups on a running cluster without training, and prints
where each rank actually ran: ``python -m tests.integration.placement_probe <gcs address> <layout JSON>...``.

Each layout is ``{"num_workers", "model_parallel", "placement"}``; for each, one JSON line
``[{rank, node_id, local_rank, driver_node}, ...]``. The node id is the one the rank's own process reports
(``ray.get_runtime_context()`` inside it), not what the driver planned. Used by ``test_multinode.py`` to check
TP/PP group placement on the two-node cluster at the cost of starting a few processes (no model, no
DeepSpeed)."""

from __future__ import annotations

import json
import sys


def where(config: dict) -> dict:
    """On a rank: who it is (its context) and the node its process runs on."""
    import ray

    from orchestrator.runtime.worker_group import rank_context

    ctx = rank_context()
    return {"rank": ctx.rank, "local_rank": ctx.local_rank, "node_id": ray.get_runtime_context().get_node_id(),
            "context_node_id": ctx.node_id, "driver_node": config["driver"]}


def main(address: str, layouts: list[dict]) -> None:
    from orchestrator.config.cluster import ClusterConfig
    from orchestrator.runtime.rank_group import run_on_group
    from orchestrator.runtime.ray_runtime import ray_session, worker_env
    from orchestrator.runtime.worker_group import GroupSpec, driver_node

    cluster = ClusterConfig(address=address)
    env = tuple(sorted(worker_env(cluster).items()))
    with ray_session(cluster):  # connected the way a job's driver connects
        for layout in layouts:
            spec = GroupSpec(num_workers=layout["num_workers"], model_parallel=layout["model_parallel"],
                             placement=layout["placement"], env=env)
            print(json.dumps(run_on_group(spec, where, {"driver": driver_node()})), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], [json.loads(a) for a in sys.argv[2:]])

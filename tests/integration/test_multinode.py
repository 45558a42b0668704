"""Two real Ray nodes on one machine (``two_node_cluster``): placement, storage without a shared output
directory, node loss. Jobs run as ``orchestrator run pretrain cluster.address=<head GCS>`` subprocesses."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow


def test_two_nodes_joined_with_their_labels(two_node_cluster):
    nodes = two_node_cluster.alive_nodes()
    labels = sorted(n.get("labels", {}).get("node_group", "") for n in nodes)
    assert labels == ["head", "worker"], nodes

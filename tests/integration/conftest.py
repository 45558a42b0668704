"""Fixtures of the integration tier: one real local Ray for the whole session."""

from __future__ import annotations

import os

os.environ.setdefault("RAY_AUTH_MODE", "token")  # before Ray is imported anywhere in this process

import pytest


@pytest.fixture(scope="session")
def ray_local():
    """A private in-process Ray (2 CPUs, token auth, 127.0.0.1) shared by every integration test of the
    session, so its start-up is paid once; jobs inside it reuse the connection (``ray_session``)."""
    import ray

    from orchestrator.config.cluster import ClusterConfig
    from orchestrator.runtime.ray_runtime import ray_session

    if ray.is_initialized():
        yield
        return
    with ray_session(ClusterConfig(num_workers=2, num_cpus=2)):
        yield

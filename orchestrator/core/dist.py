"""Distributed helpers that need no process group of their own."""

from __future__ import annotations

import socket


def barrier() -> None:
    """``torch.distributed.barrier()`` when a process group is up; a no-op in a single process."""
    import torch.distributed as dist  # torch only where a process group can exist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]

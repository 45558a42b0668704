"""The weight broadcast of ``rollout.layout=separate``: actor rank 0 -> every rollout engine, after every update.

The actor ranks already form a process group (DeepSpeed's default group, their gradients' all-reduce) and
each in-process vLLM engine makes its own default group, so the broadcast cannot use either: it gets a
process group of its own, built directly from a ``TCPStore`` (rank 0 = actor rank 0 hosts it) as a
``ProcessGroupGloo`` object on CPU or ``ProcessGroupNCCL`` on GPU, never registered as the default group
(the way vLLM's ``stateless_init_torch_distributed_process_group`` and the RLHF frameworks built on it set up
their trainer-to-engine channel). Its collectives are called on the group object with group ranks
(``BroadcastOptions.rootRank``), so the global ranks of the other groups never enter.

Protocol of one sync (the driver starts both sides at once, :mod:`.engine_client`):

* every actor rank iterates :func:`~.rollout_engines.full_named_parameters` (under ZeRO-3 the gather of a
  parameter is a collective of the actor's group, so every rank takes part; peak memory one full
  parameter), and rank 0 broadcasts each tensor in turn;
* every engine receives into buffers shaped by :func:`weight_meta` (sent ahead through Ray, the same list
  on every engine) and hands the named tensors to its engine's ``sync`` - the same ``reload_weights`` path
  the colocated engine takes.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Iterable, Iterator

import torch

SYNC_TIMEOUT_S = 600
"""How long a broadcast waits for its peers. A peer that died leaves the others blocked this long at most;
the controller does not wait for that: it sees the dead role's Ray error, kills every role and recovers."""


class WeightGroup:
    """A standalone process group of actor rank 0 (group rank 0) and the engines (ranks 1..n).

    Args:
        master: ``host:port`` of the store (hosted by group rank 0).
        rank: this process's group rank.
        world_size: 1 + the number of engines.
        use_gpu: NCCL on the current CUDA device, else gloo on CPU.
    """

    def __init__(self, master: str, rank: int, world_size: int, use_gpu: bool,
                 timeout_s: float = SYNC_TIMEOUT_S) -> None:
        import torch.distributed as dist

        host, port = master.rsplit(":", 1)
        timeout = timedelta(seconds=timeout_s)
        self.store = dist.TCPStore(host, int(port), world_size, rank == 0, timeout=timeout)
        prefix = dist.PrefixStore("rollout_weights", self.store)
        self.rank, self.world_size, self.use_gpu = rank, world_size, use_gpu
        if use_gpu:
            opts = dist.ProcessGroupNCCL.Options()
            opts._timeout = timeout
            self.pg: Any = dist.ProcessGroupNCCL(prefix, rank, world_size, opts)
            self.device = torch.device("cuda", torch.cuda.current_device())
        else:
            self.pg = dist.ProcessGroupGloo(prefix, rank, world_size, timeout)
            self.device = torch.device("cpu")

    def broadcast(self, tensor: torch.Tensor) -> torch.Tensor:
        """In-place broadcast from group rank 0 (returns ``tensor``)."""
        import torch.distributed as dist

        opts = dist.BroadcastOptions()
        opts.rootRank = 0
        self.pg.broadcast([tensor], opts).wait()
        return tensor

    def send(self, named_params: Iterable[tuple[str, torch.Tensor]]) -> int:
        """Group rank 0: broadcast every tensor in order; returns how many."""
        n = 0
        for _, t in named_params:
            self.broadcast(t.detach().to(self.device).contiguous())
            n += 1
        return n

    def receive(self, meta: list[tuple[str, list[int], str]]) -> Iterator[tuple[str, torch.Tensor]]:
        """Engines: ``(name, tensor)`` received in ``meta``'s order (lazily: each broadcast runs when the
        consumer asks for the next tensor)."""
        for name, shape, dtype in meta:
            buf = torch.empty(shape, dtype=getattr(torch, dtype), device=self.device)
            yield name, self.broadcast(buf)

    def close(self) -> None:
        pg, self.pg = getattr(self, "pg", None), None
        if pg is not None and hasattr(pg, "shutdown"):
            try:
                pg.shutdown()
            except Exception:  # noqa: BLE001 - a peer already gone
                pass


def weight_meta(module: torch.nn.Module) -> list[tuple[str, list[int], str]]:
    """``(name, full shape, dtype name)`` of every parameter in :func:`~.rollout_engines.full_named_parameters`'
    order (ZeRO-3 keeps the full shape in ``ds_shape``; the local tensor is a flat shard)."""
    out = []
    for name, p in module.named_parameters():
        shape = getattr(p, "ds_shape", None) or p.shape
        out.append((name, [int(s) for s in shape], str(p.dtype).removeprefix("torch.")))
    return out

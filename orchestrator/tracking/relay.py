"""Rank 0's metrics written to MLflow by the driver, through a file in the job's output directory.

Why: rank 0 of a training job used to log its per-step metrics with its own ``MlflowClient``. Building that
client in a worker process costs ~3.2 s of CPU on the 2-core reference machine (``import mlflow`` 1.9 s, the
SQL store's engine and schema check 1.3 s), paid at the first checkpoint's flush, while every other rank
waits in the next collective: 3.4 s of a 20-step tiny pretrain's 4.7 s training loop (issue #13). The
driver has MLflow imported and the run open anyway and sits idle while the ranks train, so when rank 0
runs on the driver's node (always with a local Ray; the placement prefers it on a cluster) rank 0 only
appends lines to a file and the driver writes them:

* :class:`RelaySink` (rank 0): the :class:`~orchestrator.tracking.metrics.MetricsLogger` interface the training
  loop uses (``log``, ``flush``, ``close``). ``log`` appends one JSON line (no MLflow, no network); ``flush``
  appends a flush request and waits until the driver acknowledges it, so the loop's invariant holds as
  before: every step up to a committed checkpoint is in the tracking store when the checkpoint commits.
  ``table_written`` hands a sample table (already written under ``output_dir``) to the driver the same way.
* :func:`relay_metrics` (driver): a thread that tails the file, feeds an ordinary ``MetricsLogger`` (so
  writes stay batched, idempotent per (key, step) and outage-tolerant) and writes the acknowledgement after
  each requested flush: ``<offset> ok`` when everything up to that offset is in the store, ``<offset> failed``
  when the store was unreachable (the points stay buffered in the driver and are retried; rank 0 is told at
  once instead of waiting, as the direct logger's flush returned False).

A line cut short by a rank that died mid-write is skipped (the restarted rank starts on a new line; the
steps it lost are replayed or backfilled after the resume like any crash's). Rank 0 on another node than the
driver (no shared disk assumed) logs directly with ``MetricsLogger.from_run`` as before.

Public API:
    RelaySink(output_dir, run_id)               rank 0's sink
    relay_metrics(output_dir, client, run_id)   driver: context manager around the worker group
    RELAY_FILE, ACK_FILE
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional

log = logging.getLogger(__name__)

RELAY_FILE = "metrics_relay.jsonl"
ACK_FILE = "metrics_relay.ack"
POLL_S = 0.05
"""How often the driver looks for new lines, and rank 0 for the acknowledgement (a stat call each)."""


class RelaySink:
    """Rank 0's metrics sink when the driver writes to MLflow (see the module doc)."""

    client = None
    """No MLflow client in this process (callers that would use one hand the work to the driver instead)."""

    def __init__(self, output_dir: str | os.PathLike, run_id: str, timeout_s: float = 60.0) -> None:
        out = Path(output_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.run_id = run_id
        self.timeout_s = timeout_s
        self._ack = out / ACK_FILE
        self._file = open(out / RELAY_FILE, "ab")
        if self._file.tell() > 0:  # an earlier rank 0 of this job may have died mid-line: start a new one
            with open(out / RELAY_FILE, "rb") as f:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    self._write({})

    def _write(self, record: Mapping[str, Any]) -> int:
        self._file.write((json.dumps(record) + "\n").encode() if record else b"\n")
        self._file.flush()  # to the OS: the driver reads it from the same node's filesystem
        return self._file.tell()

    def log(self, metrics: Mapping[str, float], step: int, timestamp_ms: Optional[int] = None) -> None:
        """Queue ``metrics`` of ``step`` for the driver (None values are left out)."""
        points = {k: float(v) for k, v in metrics.items() if v is not None}
        if points:
            self._write({"s": int(step), "t": timestamp_ms or int(time.time() * 1000), "m": points})

    def table_written(self, artifact: str) -> None:
        """A sample table at ``<output_dir>/<artifact>`` (written whole) for the driver to log as that artifact."""
        self._write({"table": artifact})

    def flush(self, timeout_s: Optional[float] = None) -> bool:
        """Ask the driver to write everything queued; True once it says all of it is in the store, False when
        it could not (store unreachable) or did not answer within ``timeout_s`` (default: the sink's)."""
        offset = self._write({"flush": True})
        limit = self.timeout_s if timeout_s is None else timeout_s
        deadline = time.monotonic() + limit
        while True:
            done, ok = _read_ack(self._ack)
            if done >= offset:
                return ok
            if time.monotonic() > deadline:
                log.warning("the driver did not confirm the MLflow write within %.0f s; training goes on", limit)
                return False
            time.sleep(POLL_S / 5)

    def close(self, timeout_s: Optional[float] = None) -> None:
        """Final flush; warns (never raises) when the driver could not confirm it."""
        if not self.flush(timeout_s):
            log.warning("metrics of the last steps may not be in MLflow yet (the driver keeps retrying)")
        self._file.close()


def _read_ack(path: Path) -> tuple[int, bool]:
    try:
        offset, status = path.read_text().split()
        return int(offset), status == "ok"
    except (OSError, ValueError):
        return -1, False


def _write_ack(path: Path, offset: int, ok: bool) -> None:
    from orchestrator.core.files import atomic_write_text  # rank 0 never reads a torn acknowledgement

    atomic_write_text(path, f"{offset} {'ok' if ok else 'failed'}\n")


class _Tail:
    """The driver's reader: complete lines of the relay file from where it stopped."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def lines(self) -> list[tuple[int, bytes]]:
        """New complete lines, each with the file offset just after it."""
        try:
            if self.path.stat().st_size <= self.offset:
                return []
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except OSError:
            return []
        out, pos = [], 0
        while True:
            end = data.find(b"\n", pos)
            if end < 0:
                break
            out.append((self.offset + end + 1, data[pos:end]))
            pos = end + 1
        self.offset += pos
        return out


@contextlib.contextmanager
def relay_metrics(output_dir: str | os.PathLike, client: Any, run_id: str) -> Iterator[None]:
    """Driver side (see the module doc): while the body runs the job's worker group, write what rank 0 relays
    into ``run_id`` with ``client``. Starts from an empty relay (files of an earlier driver are removed: no
    rank of this job has started yet); at the end reads what is left and writes it (warns if it cannot)."""
    from orchestrator.tracking.metrics import MetricsLogger

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in (RELAY_FILE, ACK_FILE):
        (out / name).unlink(missing_ok=True)
    sink = MetricsLogger(client, run_id, flush_every=2000, flush_interval_s=30.0)
    tail, ack = _Tail(out / RELAY_FILE), out / ACK_FILE
    stop = threading.Event()

    def step() -> None:
        flush_at = None
        for end, raw in tail.lines():
            try:
                rec = json.loads(raw) if raw.strip() else {}
            except ValueError:  # a line cut short by a rank that died while writing it
                log.debug("skipping a partial relay line: %r", raw[:80])
                continue
            if "m" in rec:
                sink.log(rec["m"], rec["s"], rec.get("t"))
            elif "table" in rec:
                _log_table(client, run_id, out, rec["table"])
            elif rec.get("flush"):
                flush_at = end
        if flush_at is not None:
            _write_ack(ack, flush_at, sink.flush())

    def loop() -> None:
        while not stop.wait(POLL_S):
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - never let tracking end the job; rank 0 times out
                log.warning("relaying rank 0's metrics failed: %s", exc)

    thread = threading.Thread(target=loop, name="metrics-relay", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        step()
        sink.close()


def _log_table(client: Any, run_id: str, out: Path, artifact: str) -> None:
    from orchestrator.tracking.tables import log_table

    try:
        table = json.loads((out / artifact).read_text())
        log_table(client, run_id, table, artifact)
    except Exception as exc:  # noqa: BLE001 - a sample table is never worth a failed job
        log.warning("sample table %s not logged to MLflow (%s); kept in %s", artifact, exc, out / artifact)

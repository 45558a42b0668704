"""Pure helpers of the shared loop: backfilling lost metric points, fault injection guard."""

from __future__ import annotations

from orchestrator.training.loop import LoopSpec, backfill, maybe_inject_failure
from orchestrator.training.metrics import StepLog


class ListSink:
    def __init__(self) -> None:
        self.points: list[tuple[int, dict]] = []
        self.flushes = 0

    def log(self, metrics, step):
        self.points.append((step, metrics))

    def flush(self):
        self.flushes += 1
        return True


def test_backfill_relogs_only_steps_up_to_the_checkpoint(tmp_path):
    log = StepLog(tmp_path / "steps.jsonl")
    for k in range(1, 7):
        log.append(k, {"loss": 1.0 / k, "end_time_s": 100.0 + k})
    sink = ListSink()
    backfill(sink, log, upto_step=4)
    assert [s for s, _ in sink.points] == [1, 2, 3, 4]
    assert all("end_time_s" not in m for _, m in sink.points) and sink.flushes == 1


def test_fault_injection_fires_only_for_its_rank_and_step(tmp_path):
    spec = LoopSpec(max_steps=5, output_dir=str(tmp_path), fail_at_step=3)
    maybe_inject_failure(spec, 2, rank=1, world_size=2)  # other step: nothing
    maybe_inject_failure(spec, 3, rank=0, world_size=2)  # other rank: nothing
    (tmp_path / ".fail_at_step_3.done").write_text("x")
    maybe_inject_failure(spec, 3, rank=1, world_size=2)  # already happened once: nothing
    assert (tmp_path / ".fail_at_step_3.done").read_text() == "x"

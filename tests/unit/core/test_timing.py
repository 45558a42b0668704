"""The ``startup.*`` breakdown every job records (orchestrator.core.timing)."""

from __future__ import annotations

import time

from orchestrator.core.timing import AFTER_START, Phases, one_line, startup_line, startup_metrics


def test_phases_accumulate_in_first_run_order():
    phases = Phases()
    with phases.phase("ray_start"):
        time.sleep(0.02)
    phases.add("roles_start", 2.0)
    with phases.phase("ray_start"):  # a second visit adds up
        time.sleep(0.02)
    assert list(phases.seconds) == ["ray_start", "roles_start"]
    assert 0.04 <= phases.seconds["ray_start"] < 1.0
    assert phases.metrics() == {"startup.ray_start_s": round(phases.seconds["ray_start"], 3),
                                "startup.roles_start_s": 2.0}


def test_a_phase_that_raises_is_still_counted():
    phases = Phases()
    try:
        with phases.phase("roles_start"):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert "roles_start" in phases.seconds


def test_to_first_step_sums_the_phases_before_the_first_step_only():
    seconds = {"inputs": 0.5, "ray_start": 1.25, "tracking_start": 2.0, "roles_start": 5.0, "first_step": 0.75,
               "train_loop": 9.0, "checkpoint": 1.0, "export": 0.5, "register": 0.25, "teardown": 0.1}
    m = startup_metrics(seconds)
    assert m["startup.to_first_step_s"] == 9.5  # inputs + ray_start + tracking_start + roles_start + first_step
    assert {k for k in m if k != "startup.to_first_step_s"} == {f"startup.{k}_s" for k in seconds}
    assert all(k in AFTER_START for k in ("train_loop", "checkpoint", "export", "register", "teardown"))
    # a data job names its own work phases
    assert startup_metrics({"ray_start": 1.0, "filter": 3.0}, ("filter",))["startup.to_first_step_s"] == 1.0


def test_startup_line_names_only_start_up_phases_largest_first_in_their_order():
    m = startup_metrics({"inputs": 0.1, "ray_start": 1.0, "roles_start": 5.0, "first_step": 0.5, "train_loop": 30.0,
                         "checkpoint": 4.0})
    line = startup_line("ppo", m, limit=3)
    assert line == "ppo: first step after 6.6s of start-up (ray_start 1.0s, roles_start 5.0s, first_step 0.5s)"
    assert one_line({"a": 1.0, "b": 3.0, "c": 2.0}, 2) == "b 3.0s, c 2.0s"


def test_record_startup_writes_the_metrics_it_returns(tmp_path):
    import json

    from orchestrator.core.timing import STARTUP_FILE, record_startup

    m = record_startup(tmp_path, {"ray_start": 1.0, "filter": 3.0}, ("filter",))
    assert m == {"startup.ray_start_s": 1.0, "startup.filter_s": 3.0, "startup.to_first_step_s": 1.0}
    assert json.loads((tmp_path / STARTUP_FILE).read_text()) == m

"""Concise console output by default: our own lines on the console, library output in the run's log file.

:func:`capture` sends everything a job's processes print to ``<output_dir>/logs/orchestrator.log``;
:func:`say` writes our lines (stage progress, summaries, warnings meant for the user) to the console;
:class:`StepProgress` keeps one live line per running training stage. ``ORCHESTRATOR_VERBOSE=1``
restores every library's own logging and warnings on the console.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Iterator, Optional

NOISY_LOGGERS = ("ray", "ray.train", "ray.data", "deepspeed", "DeepSpeed", "mlflow", "alembic", "transformers",
                 "torch.distributed", "urllib3", "filelock", "datasets", "hydra")

# Inherited by Ray workers (through worker_env) so their output is as quiet as the driver's.
QUIET_ENV = {
    "PYTHONWARNINGS": "ignore::DeprecationWarning,ignore::FutureWarning,ignore::UserWarning",
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "RAY_TRAIN_ENABLE_STATE_TRACKING": "0",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "RAY_DATA_LOG_LEVEL": "WARNING",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
}


# Applied whether verbose or not (they change no output): no telemetry threads or network calls at
# start-up and exit (MLflow's telemetry client fetches a config and joins its threads at exit; the
# machine may be offline).
LEAN_ENV = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
}


def verbose() -> bool:
    return os.environ.get("ORCHESTRATOR_VERBOSE", "") not in ("", "0", "false")


def quiet_env() -> dict[str, str]:
    """Environment for worker processes (only :data:`LEAN_ENV` when verbose)."""
    return dict(LEAN_ENV) if verbose() else {**LEAN_ENV, **QUIET_ENV}


def quiet_libraries() -> None:
    """Silence library warnings and INFO logs in this process (only :data:`LEAN_ENV` when verbose)."""
    for key, value in LEAN_ENV.items():
        os.environ.setdefault(key, value)
    if verbose():
        return
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    for category in (DeprecationWarning, FutureWarning, UserWarning):
        warnings.filterwarnings("ignore", category=category)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING if name != "alembic" else logging.ERROR)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("orchestrator").setLevel(logging.INFO)


# ------------------------------------------------------------------------------------- our own lines
_console: dict[str, object] = {"fd": None, "log": None}


def say(text: str) -> None:
    """One line (or block) of ours for the person at the console; also kept in the run's log file while
    library output is captured there (see :func:`capture`)."""
    sys.stdout.flush()
    fd = _console["fd"]
    if fd is None:
        print(text, flush=True)
        return
    print(text, flush=True)  # into the log file (fd 1 points there while capturing)
    os.write(fd, (text + "\n").encode())  # type: ignore[arg-type]


def console_is_tty() -> bool:
    fd = _console["fd"]
    return os.isatty(fd if fd is not None else sys.stdout.fileno())  # type: ignore[arg-type]


@contextlib.contextmanager
def capture(log_path: str | Path, plain_errors: tuple[type[BaseException], ...] = ()) -> Iterator[Path]:
    """Send every library line of this process and the processes it starts (Ray workers' echoes,
    DeepSpeed, transformers, C++ logs) to ``log_path``; only :func:`say` reaches the console. On an
    error, the console gets the traceback and the log path, except for ``plain_errors`` (user errors
    that the caller reports in one line; their traceback stays in the log). A no-op with
    ``ORCHESTRATOR_VERBOSE=1``."""
    path = Path(log_path)
    if verbose() or _console["fd"] is not None:
        yield path
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved_out, saved_err = os.dup(1), os.dup(2)
    log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    _console.update(fd=saved_out, log=str(path))
    say(f"logs: {path}")
    try:
        yield path
    except BaseException as exc:
        if not isinstance(exc, SystemExit):
            import traceback

            text = "".join(traceback.format_exception(exc))
            print(text, file=sys.stderr, flush=True)
            if not isinstance(exc, plain_errors):
                os.write(saved_err, f"{text}error: {type(exc).__name__}: {exc}\nfull log: {path}\n".encode())
        raise
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        os.close(saved_out)
        os.close(saved_err)
        _console.update(fd=None, log=None)
    summary = warning_summary(path)
    if summary:
        say(summary)


def warning_summary(log_path: Path) -> str:
    """``N library warnings (M distinct) in <log>`` for the lines of a finished run's log file."""
    seen: dict[str, int] = {}
    with open(log_path, errors="replace") as f:
        for line in f:
            if "Warning" in line or " WARNING " in line or line.startswith("WARNING"):
                key = re.sub(r"\d+", "#", line.split(":", 2)[-1].strip())[:120]
                seen[key] = seen.get(key, 0) + 1
    if not seen:
        return ""
    return f"{sum(seen.values())} library warnings ({len(seen)} distinct) in {log_path}"


class StepProgress:
    """A live progress line for a running training stage, read from its ``steps.jsonl``.

    On a terminal the line is redrawn in place; elsewhere (CI, ``ray job logs``) a plain line is printed
    every ``every_s`` seconds. Runs in a daemon thread of the driver: the workers know nothing of it.
    """

    def __init__(self, label: str, steps_file: str | Path, max_steps: int, every_s: float = 15.0,
                 poll_s: float = 1.0) -> None:
        self.label, self.path, self.max_steps = label, Path(steps_file), max_steps
        self.every_s, self.poll_s = every_s, poll_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"progress-{label}")
        self._t0 = time.time()

    def __enter__(self) -> "StepProgress":
        if not verbose():
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
            if console_is_tty():
                _write_console("\n")

    def line(self) -> str:
        last = _last_record(self.path)
        if last is None:
            return f"{self.label}: starting ({time.time() - self._t0:.0f}s)"
        step = int(last["step"])
        parts = [f"{self.label}: step {step}/{self.max_steps}"]
        for key, fmt in (("loss", "loss {:.4f}"), ("reward_mean", "reward {:.3f}"), ("tokens_per_s", "{:,.0f} tok/s")):
            if isinstance(last.get(key), (int, float)):
                parts.append(fmt.format(last[key]))
        rate = last.get("step_time_s")
        if isinstance(rate, (int, float)) and step < self.max_steps:
            parts.append(f"ETA {rate * (self.max_steps - step):.0f}s")
        return ", ".join(parts)

    def _run(self) -> None:
        last_print = 0.0
        tty = console_is_tty()
        while not self._stop.wait(self.poll_s):
            if tty:
                _write_console("\r\x1b[2K" + self.line())
            elif time.time() - last_print >= self.every_s:
                say(self.line())
                last_print = time.time()


def _write_console(text: str) -> None:
    fd = _console["fd"]
    os.write(fd if fd is not None else sys.stdout.fileno(), text.encode())  # type: ignore[arg-type]


def _last_record(path: Path) -> Optional[dict]:
    """The newest complete line of a steps.jsonl (None before the first step)."""
    import json

    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 8192))
            lines = f.read().splitlines()
    except OSError:
        return None
    for raw in reversed(lines):
        try:
            rec = json.loads(raw)
        except ValueError:
            continue
        if isinstance(rec, dict) and "step" in rec:
            return rec
    return None

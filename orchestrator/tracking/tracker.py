"""MLflow run lifecycle of one job: create or reopen, tags/params/config, status, lineage."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping, Optional

import yaml

from orchestrator.config.base import as_dict
from orchestrator.config.jobs import JobConfig
from orchestrator.config.redact import redact
from orchestrator.tracking.describe import NOTE_TAG, describe_run
from orchestrator.tracking.metrics import MetricsLogger

log = logging.getLogger(__name__)

STATE_FILE = "tracking.json"
# Fields that do not change what a run computes: excluded from the config hash.
_VOLATILE = ("dry_run", "resume")


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and v:
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def config_hash(cfg: JobConfig) -> str:
    """Stable hash of the resolved config (without run-control fields like resume/dry_run)."""
    d = {k: v for k, v in as_dict(cfg).items() if k not in _VOLATILE}
    d.get("tracking", {}).pop("parent_run_id", None)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:16]


@lru_cache(maxsize=1)
def git_commit() -> str:
    if os.environ.get("ORCHESTRATOR_GIT_COMMIT"):  # set by `orchestrator submit`: a job's copy has no .git
        return os.environ["ORCHESTRATOR_GIT_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                              cwd=Path(__file__).resolve().parents[2]).stdout.strip() or "unknown"
    except Exception:
        return "unknown"


def _is_local_store(uri: str) -> bool:
    return uri.startswith(("sqlite:", "file:", "/", "postgresql", "mysql", "mssql"))


class JobTracker:
    """The MLflow run of one job (see :meth:`start`). Use as a context manager: the run ends
    FINISHED on success, FAILED on an exception, KILLED on Ctrl-C or SIGTERM (``ray job stop``)."""

    def __init__(self, client, run_id: str, cfg: JobConfig, resumed: bool, experiment_id: Optional[str] = None) -> None:
        self.client = client
        self.run_id = run_id
        self.experiment_id = experiment_id
        """The run's experiment (for UI links)."""
        self.cfg = cfg
        self.resumed = resumed
        self.tracking_uri: str = cfg.tracking.uri  # type: ignore[assignment]
        self.metrics = MetricsLogger(client, run_id)
        self._finished = False
        self._system_monitor = None

    # ------------------------------------------------------------------ lifecycle
    @classmethod
    def start(cls, cfg: JobConfig, run_name: Optional[str] = None,
              extra_tags: Optional[Mapping[str, str]] = None, resume_run_id: Optional[str] = None) -> "JobTracker":
        """Create this job's run, or reopen it when the job resumes (same ``output_dir``).

        The run id is kept in ``<output_dir>/tracking.json``; without that file (a node-local output
        directory on another node, checkpoints on ``cluster.storage_path``) ``resume_run_id``, the run
        recorded in the resumed checkpoint, is reopened. ``resume=never`` always starts a new run. Tags: ``job_kind``, ``config_hash``, ``git_commit``, ``run_name`` (+ ``cfg.tracking.tags``)
        and the run's one-sentence description (``mlflow.note.content``, :mod:`.describe`).
        """
        from mlflow import MlflowClient

        from orchestrator.tracking.store import prepare_local_store

        assert cfg.tracking.uri, "tracking.uri is filled by config loading"
        prepare_local_store(cfg.tracking.uri)
        client = MlflowClient(tracking_uri=cfg.tracking.uri)
        state_path = Path(cfg.output_dir) / STATE_FILE
        run_id = exp_id = None
        if cfg.resume != "never" and state_path.exists():
            state = json.loads(state_path.read_text())
            if state.get("tracking_uri") == cfg.tracking.uri:
                try:
                    exp_id = client.get_run(state["run_id"]).info.experiment_id
                    run_id = state["run_id"]
                except Exception:
                    log.warning("run %s recorded in %s is not in the store; starting a new run", state["run_id"], state_path)
        elif cfg.resume != "never" and resume_run_id:
            try:
                exp_id = client.get_run(resume_run_id).info.experiment_id
                run_id = resume_run_id
            except Exception:
                log.warning("run %s of the resumed checkpoint is not in the store; starting a new run", resume_run_id)
        tags = {"job_kind": cfg.kind, "config_hash": config_hash(cfg), "git_commit": git_commit(),
                "run_name": cfg.run_name, **cfg.tracking.tags, **(extra_tags or {})}
        if cfg.tracking.parent_run_id:
            tags["mlflow.parentRunId"] = cfg.tracking.parent_run_id
        tags[NOTE_TAG] = describe_run(cfg, tags)  # the run's description in the MLflow UI
        if run_id is not None:
            client.update_run(run_id, status="RUNNING")
            for k, v in tags.items():
                client.set_tag(run_id, k, v)
            tracker = cls(client, run_id, cfg, resumed=True, experiment_id=exp_id)
        else:
            exp_id = ensure_experiment(client, cfg)
            run = client.create_run(exp_id, run_name=run_name or cfg.run_name, tags=tags)
            run_id = run.info.run_id
            tracker = cls(client, run_id, cfg, resumed=False, experiment_id=exp_id)
            tracker._log_config()
            state_path.parent.mkdir(parents=True, exist_ok=True)
            state_path.write_text(json.dumps({"run_id": run_id, "tracking_uri": cfg.tracking.uri}))
        tracker._install_sigterm()
        if cfg.tracking.log_system_metrics:
            tracker._start_system_metrics()
        return tracker

    def _start_system_metrics(self, sampling_interval_s: float = 10.0) -> None:
        """CPU/GPU/memory/disk/network of this node as ``system/*`` metrics (MLflow's own monitor);
        a resumed run continues its step numbers. Never fatal."""
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            monitor = SystemMetricsMonitor(self.run_id, sampling_interval=sampling_interval_s, samples_before_logging=1,
                                           resume_logging=self.resumed, tracking_uri=self.tracking_uri)
            monitor.start()
            self._system_monitor = monitor
        except Exception as exc:  # e.g. psutil missing
            log.warning("system metrics disabled: %s", exc)

    def _install_sigterm(self) -> None:
        """``ray job stop`` sends SIGTERM: turn it into KeyboardInterrupt so the run ends KILLED."""
        if threading.current_thread() is not threading.main_thread():
            return

        def handler(signum, frame):  # noqa: ARG001
            raise KeyboardInterrupt("SIGTERM")

        signal.signal(signal.SIGTERM, handler)

    def _log_config(self) -> None:
        from mlflow.entities import Param

        params = [Param(k, str(v)[:6000]) for k, v in flatten(redact(as_dict(self.cfg))).items()]
        for i in range(0, len(params), 100):
            self.client.log_batch(self.run_id, params=params[i:i + 100])
        self.log_text(yaml.safe_dump(redact(as_dict(self.cfg)), sort_keys=False), "config/resolved.yaml")

    def finish(self, status: str = "FINISHED") -> None:
        """Flush metrics and set the terminal status (FINISHED, FAILED or KILLED)."""
        if self._finished:
            return
        if self._system_monitor is not None:
            try:
                self._system_monitor.finish()
            except Exception as exc:
                log.warning("system metrics monitor did not stop cleanly: %s", exc)
        self.metrics.close()
        try:
            self.client.set_terminated(self.run_id, status=status)
        except Exception as exc:
            log.warning("could not set MLflow run %s to %s: %s", self.run_id, status, exc)
        self._finished = True

    def __enter__(self) -> "JobTracker":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.finish("FINISHED")
        elif issubclass(exc_type, (KeyboardInterrupt, SystemExit)):
            self.finish("KILLED")
        else:
            self.finish("FAILED")

    # ------------------------------------------------------------------ logging
    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        self.metrics.log(metrics, step)

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Params are immutable in MLflow: on a resumed run, already-set keys are skipped."""
        from mlflow.entities import Param

        existing = self.client.get_run(self.run_id).data.params
        new = [Param(k, str(v)[:6000]) for k, v in flatten(redact(dict(params))).items() if k not in existing]
        if new:
            self.client.log_batch(self.run_id, params=new)

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def log_artifact(self, path: str | Path, artifact_path: Optional[str] = None) -> None:
        path = Path(path)
        if path.is_dir():
            self.client.log_artifacts(self.run_id, str(path), artifact_path)
        else:
            self.client.log_artifact(self.run_id, str(path), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self.client.log_text(self.run_id, text, artifact_file)

    def log_dict(self, obj: Any, artifact_file: str) -> None:
        self.client.log_dict(self.run_id, obj, artifact_file)

    def log_table(self, table: Mapping[str, Any], artifact_file: str) -> None:
        """A table (column -> values) the UI shows as one, replacing an earlier one of the same name."""
        from orchestrator.tracking.tables import log_table

        log_table(self.client, self.run_id, table, artifact_file)

    def log_dataset(self, dataset_dir: str | Path, context: str, name: Optional[str] = None) -> str:
        """Record a dataset directory (its manifest digest) as an input of this run; returns the digest."""
        from orchestrator.tracking.lineage import log_dataset_input

        return log_dataset_input(self.client, self.run_id, dataset_dir, context, name)

    def register_model(self, model_dir: str | Path, name: str, tags: Optional[Mapping[str, str]] = None) -> Optional[str]:
        """Log ``model_dir`` as the run's ``model`` artifact and register it; returns the version."""
        from orchestrator.tracking.lineage import register_model_dir

        if not self.cfg.tracking.register_models:
            self.log_artifact(model_dir, "model")
            return None
        return register_model_dir(self.client, self.run_id, model_dir, name, tags or {})


EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
"""MLflow's UI opens an experiment in its model-training view (runs, metrics, models) with this tag,
in its GenAI view (traces, evaluation runs) without it."""


def ensure_experiment(client, cfg: JobConfig) -> str:
    """Get or create the experiment (tagged for the model-training view); local stores keep artifacts
    beside the database."""
    name = cfg.tracking.experiment
    exp = client.get_experiment_by_name(name)
    if exp is None:
        artifact_location = None
        if _is_local_store(cfg.tracking.uri or ""):
            artifact_location = (Path(cfg.workspace) / "mlartifacts" / name).resolve().as_uri()
        try:
            return client.create_experiment(name, artifact_location=artifact_location, tags=EXPERIMENT_KIND)
        except Exception:  # created concurrently
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    for key, value in EXPERIMENT_KIND.items():  # experiments made by earlier versions get the tag too
        if exp.tags.get(key) != value:
            client.set_experiment_tag(exp.experiment_id, key, value)
    return exp.experiment_id

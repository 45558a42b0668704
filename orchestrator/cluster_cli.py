"""Cluster-side verbs of the CLI over the Ray Jobs API: submit, status, logs, stop, resume, list, runs.

Every verb talks to a running cluster's dashboard (``--address http://HOST:8265``, or
``RAY_API_SERVER_ADDRESS``) with the Ray auth token (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or
``~/.ray/auth_token``). User errors print one line and exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from typing import Callable, Optional, Sequence

from orchestrator import kinds
from orchestrator.config.errors import ConfigError
from orchestrator.config.redact import redact_value
from orchestrator.runtime import jobs_api

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
EXIT_CONFIG_ERROR = 2


def _parser(verb: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"orchestrator {verb}")
    p.add_argument("--address", help="Ray dashboard URL, e.g. http://127.0.0.1:8265 (default: RAY_API_SERVER_ADDRESS)")
    return p


# --------------------------------------------------------------------------------------------- verbs
def cmd_submit(argv: Sequence[str]) -> int:
    p = _parser("submit")
    p.add_argument("kind")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, as for `orchestrator run`")
    p.add_argument("--wait-run", type=float, default=90.0, metavar="S",
                   help="seconds to wait for the job's MLflow run to print its link (0: do not wait)")
    a = p.parse_intermixed_args(argv)
    return _submit(a.kind, a.overrides, a.address, a.wait_run, verb="submitted")


def _submit(kind: str, overrides: Sequence[str], address: Optional[str], wait_run: float, verb: str) -> int:
    cfg = kinds.load(kind, overrides)  # the same validation as `orchestrator run`, before anything is sent
    if cfg.dry_run:
        raise ConfigError("dry_run", "a dry run starts nothing on a cluster",
                          "use `orchestrator run <kind> dry_run=true` locally, or drop dry_run")
    address = jobs_api.resolve_address(address, cfg)
    client = jobs_api.connect(address)
    sub = jobs_api.submit(cfg, overrides, address, kinds.load, client=client)
    print(f"{verb} {kind} as job {sub.job_id} on {address}")
    print(f"job: {sub.job_id}")
    print(f"follow: orchestrator logs {sub.job_id} --follow --address {address}")
    if wait_run > 0 and cfg.tracking.enabled:
        run = _wait_for_run(client, sub.job_id, cfg.tracking.uri or "", cfg.tracking.experiment, wait_run)
        if run is not None:
            print(f"mlflow: {jobs_api.run_link(cfg.tracking.uri or '', run)}")
            print(f"mlflow_run_id: {run.info.run_id}")
        else:
            print(f"mlflow: run not created yet; `orchestrator status {sub.job_id}` shows it later")
    return 0


def _wait_for_run(client, job_id: str, uri: str, experiment: str, wait_s: float):
    """Poll MLflow for the job's run until it appears, the job ends, or ``wait_s`` passes."""
    deadline = time.time() + wait_s
    while True:
        try:
            run = jobs_api.find_run(uri, experiment, job_id)
        except Exception:  # tracking store not reachable from here: the job may still reach it
            return None
        if run is not None:
            return run
        if time.time() >= deadline or str(client.get_job_status(job_id)) in TERMINAL:
            return None
        time.sleep(1.0)


def cmd_status(argv: Sequence[str]) -> int:
    p = _parser("status")
    p.add_argument("job", nargs="?")
    a = p.parse_args(argv)
    if a.job is None:
        return cmd_list(argv)
    client = jobs_api.connect(jobs_api.resolve_address(a.address))
    info = _job_info(client, a.job)
    meta = info.metadata or {}
    print(f"job: {a.job}")
    print(f"status: {info.status}")
    if info.message:
        print(f"message: {info.message.strip().splitlines()[-1][:300]}")
    print(f"kind: {meta.get(jobs_api.META_KIND, '-')}  run_name: {meta.get(jobs_api.META_RUN_NAME, '-')}")
    print(f"started: {_ts(info.start_time)}  ended: {_ts(info.end_time)}")
    uri = meta.get(jobs_api.META_TRACKING) or os.environ.get("MLFLOW_TRACKING_URI", "")
    if uri and meta.get(jobs_api.META_EXPERIMENT):
        try:
            run = jobs_api.find_run(uri, meta[jobs_api.META_EXPERIMENT], a.job)
        except Exception as exc:
            print(f"mlflow: unreachable ({redact_value(str(exc).splitlines()[0])[:120]})")
        else:
            if run is not None:
                print(f"mlflow: {jobs_api.run_link(uri, run)}  [{run.info.status}]")
    return 0


def cmd_list(argv: Sequence[str]) -> int:
    p = _parser("list")
    p.add_argument("job", nargs="?", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    client = jobs_api.connect(jobs_api.resolve_address(a.address))
    jobs = sorted(client.list_jobs(), key=lambda j: j.start_time or 0)
    print(f"{'JOB':<44} {'STATUS':<10} {'KIND':<12} {'RUN_NAME':<24} STARTED")
    for j in jobs:
        meta = j.metadata or {}
        print(f"{(j.submission_id or j.job_id or '-'):<44} {str(j.status):<10} {meta.get(jobs_api.META_KIND, '-'):<12} "
              f"{meta.get(jobs_api.META_RUN_NAME, '-'):<24} {_ts(j.start_time)}")
    return 0


def cmd_logs(argv: Sequence[str]) -> int:
    p = _parser("logs")
    p.add_argument("job")
    p.add_argument("--follow", "-f", action="store_true", help="stream until the job ends; exit 0 only if it succeeded")
    a = p.parse_args(argv)
    client = jobs_api.connect(jobs_api.resolve_address(a.address))
    _job_info(client, a.job)
    if not a.follow:
        sys.stdout.write(client.get_job_logs(a.job))
        return 0

    async def tail() -> None:
        async for chunk in client.tail_job_logs(a.job):
            sys.stdout.write(chunk)
            sys.stdout.flush()

    asyncio.run(tail())
    status = _wait_terminal(client, a.job, 30.0)
    print(f"job {a.job} {status}")
    return 0 if status == "SUCCEEDED" else 1


def cmd_stop(argv: Sequence[str]) -> int:
    p = _parser("stop")
    p.add_argument("job")
    p.add_argument("--timeout", type=float, default=90.0, metavar="S", help="seconds to wait for the job to end")
    a = p.parse_args(argv)
    client = jobs_api.connect(jobs_api.resolve_address(a.address))
    info = _job_info(client, a.job)
    if str(info.status) in TERMINAL:
        print(f"job {a.job} already {info.status}")
        return 0
    client.stop_job(a.job)
    status = _wait_terminal(client, a.job, a.timeout)
    print(f"job {a.job} {status}")
    meta = info.metadata or {}
    uri = meta.get(jobs_api.META_TRACKING) or os.environ.get("MLFLOW_TRACKING_URI", "")
    if uri and meta.get(jobs_api.META_EXPERIMENT):
        try:
            run = jobs_api.find_run(uri, meta[jobs_api.META_EXPERIMENT], a.job)
        except Exception:
            run = None
        if run is not None:
            print(f"mlflow run {run.info.run_id} {run.info.status}")
    return 0 if status == "STOPPED" else 1


def cmd_resume(argv: Sequence[str]) -> int:
    p = _parser("resume")
    p.add_argument("id", help="a job id, or the MLflow run id of a job submitted with `orchestrator submit`")
    p.add_argument("--tracking-uri", help="where to look up an MLflow run id (default: the cluster jobs' stores)")
    p.add_argument("--wait-run", type=float, default=90.0, metavar="S")
    a = p.parse_args(argv)
    address = jobs_api.resolve_address(a.address)
    client = jobs_api.connect(address)
    job_id = _job_of(client, a.id, a.tracking_uri)
    meta = jobs_api.job_metadata(client, job_id)
    if jobs_api.META_KIND not in meta:
        raise ConfigError("id", f"job {job_id} was not submitted by `orchestrator submit`", "resume jobs submitted with it")
    status = str(client.get_job_status(job_id))
    if status not in TERMINAL:
        raise ConfigError("id", f"job {job_id} is still {status}", f"stop it first: orchestrator stop {job_id}")
    overrides = json.loads(meta[jobs_api.META_OVERRIDES]) + ["resume=auto"]
    print(f"resuming job {job_id} ({status})")
    return _submit(meta[jobs_api.META_KIND], overrides, address, a.wait_run, verb="resubmitted")


def cmd_runs(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(prog="orchestrator runs")
    p.add_argument("--tracking-uri", default=os.environ.get("MLFLOW_TRACKING_URI", "sqlite:///outputs/mlflow.db"))
    p.add_argument("--experiment", default="orchestrator")
    p.add_argument("--max", type=int, default=20)
    a = p.parse_args(argv)
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=a.tracking_uri)
    exp = client.get_experiment_by_name(a.experiment)
    if exp is None:
        raise ConfigError("--experiment", f"no experiment {a.experiment!r} in {redact_value(a.tracking_uri)}",
                          "check --tracking-uri/--experiment")
    print(f"{'RUN_ID':<34} {'STATUS':<9} {'KIND':<12} {'NAME':<24} {'LOSS':>8}  JOB")
    for r in client.search_runs([exp.experiment_id], max_results=a.max, order_by=["attributes.start_time DESC"]):
        loss = r.data.metrics.get("loss")
        print(f"{r.info.run_id:<34} {r.info.status:<9} {r.data.tags.get('job_kind', '-'):<12} "
              f"{(r.info.run_name or '-'):<24} {('%.4f' % loss) if loss is not None else '-':>8}  "
              f"{r.data.tags.get(jobs_api.RUN_TAG, '-')}")
    return 0


# ------------------------------------------------------------------------------------------- helpers
def _job_info(client, job_id: str):
    try:
        return client.get_job_info(job_id)
    except Exception:
        raise ConfigError("job", f"no job {job_id!r} on this cluster", "`orchestrator list` shows the cluster's jobs") from None


def _job_of(client, ident: str, tracking_uri: Optional[str]) -> str:
    """``ident`` if it is a job id, else the job recorded on the MLflow run ``ident`` (tag ``ray_job_id``)."""
    try:
        client.get_job_info(ident)
        return ident
    except Exception:
        pass
    from mlflow import MlflowClient

    uris = [u for u in (tracking_uri, os.environ.get("MLFLOW_TRACKING_URI")) if u]
    uris += sorted({(j.metadata or {}).get(jobs_api.META_TRACKING, "") for j in client.list_jobs()} - {""})
    for uri in dict.fromkeys(uris):
        try:
            run = MlflowClient(tracking_uri=uri).get_run(ident)
        except Exception:
            continue
        job_id = run.data.tags.get(jobs_api.RUN_TAG)
        if not job_id:
            raise ConfigError("id", f"MLflow run {ident} was not started by a submitted job",
                              "resume it with `orchestrator run <kind> run_name=<its run name> resume=auto`")
        _job_info(client, job_id)
        return job_id
    raise ConfigError("id", f"{ident!r} is neither a job on this cluster nor a known MLflow run",
                      "pass a job id from `orchestrator list`, or --tracking-uri for the run's store")


def _wait_terminal(client, job_id: str, timeout_s: float) -> str:
    deadline = time.time() + timeout_s
    status = str(client.get_job_status(job_id))
    while status not in TERMINAL and time.time() < deadline:
        time.sleep(0.5)
        status = str(client.get_job_status(job_id))
    return status


def _ts(ms: Optional[int]) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ms / 1000)) if ms else "-"


VERBS: dict[str, Callable[[Sequence[str]], int]] = {
    "submit": cmd_submit, "status": cmd_status, "logs": cmd_logs, "stop": cmd_stop,
    "resume": cmd_resume, "list": cmd_list, "runs": cmd_runs,
}


def main(verb: str, args: Sequence[str]) -> int:
    try:
        return VERBS[verb](list(args))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR

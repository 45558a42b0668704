"""Submission of job kinds to a running Ray cluster through the Ray Jobs API.

The submitter validates the config locally, then hands the cluster ``python -m jobs.<kind> <overrides>``
with the repository as ``working_dir``. The overrides are *pinned* so that the job computes exactly
what was validated here and a resubmission (``orchestrator resume``) lands in the same output
directory, checkpoints and MLflow run:

* ``workspace`` and ``tracking.uri`` are the resolved absolute values (a job's cwd is Ray's unpacked
  copy of the working dir, so a relative workspace would be lost between submissions);
* ``cluster.address=auto``: inside the job, Ray is the cluster the job runs on;
* ``tracking.tags.ray_job_id``: lets ``status``/``submit`` find the job's MLflow run.

Public API: :func:`connect`, :func:`submit`, :func:`job_metadata`, :func:`find_run`, :func:`run_link`,
:func:`find_token`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from orchestrator.config.errors import ConfigError
from orchestrator.config.jobs import JobConfig
from orchestrator.config.redact import redact_value

REPO = Path(__file__).resolve().parents[2]

# Never uploaded with the working dir: environments, outputs, caches, VCS data (``.gitignore`` is
# honoured by Ray as well; these also cover checkouts without one).
WORKING_DIR_EXCLUDES = [".venv/", "outputs/", "multirun/", ".git/", "test-artifacts/", "**/__pycache__/",
                        "*.egg-info/", ".pytest_cache/", "*.pyc", "shared/", ".whl/", ".gl/"]

# Forwarded from the submitter's environment to the job when set: credentials for MLflow, artifact
# stores (and checkpoint stores: ``cluster.storage_path=s3://...`` on an S3-compatible endpoint needs
# ``AWS_ENDPOINT_URL_S3``) and the HF hub. Their values travel in the runtime_env only and are never printed.
FORWARDED_ENV = ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
                 "MLFLOW_TRACKING_INSECURE_TLS", "MLFLOW_S3_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
                 "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION",
                 "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
                 "AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCESS_KEY", "HF_TOKEN", "ORCHESTRATOR_VERBOSE")

# Seconds Ray's job supervisor waits after SIGTERM (``stop``) before SIGKILL: time for the job to mark
# its MLflow run KILLED and release its workers (Ray's default of 3 s is too short for that).
STOP_GRACE_S = "30"

# Keys the submitter pins itself (see module docstring); user overrides of these are replaced.
PINNED_KEYS = ("workspace", "tracking.uri", "cluster.address", "resume", "tracking.tags.ray_job_id")

META_KIND, META_OVERRIDES, META_RUN_NAME = "orchestrator.kind", "orchestrator.overrides", "orchestrator.run_name"
META_TRACKING, META_EXPERIMENT = "orchestrator.tracking_uri", "orchestrator.experiment"
RUN_TAG = "ray_job_id"


@dataclass(frozen=True)
class Submitted:
    job_id: str
    entrypoint: str
    address: str


# ---------------------------------------------------------------------------------------------- auth
def find_token() -> Optional[str]:
    """The Ray auth token, looked up like Ray does: ``RAY_AUTH_TOKEN``, the file ``RAY_AUTH_TOKEN_PATH``,
    then ``~/.ray/auth_token``. None when there is none."""
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if token:
        return token
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    candidates = [Path(path).expanduser()] if path else [Path.home() / ".ray" / "auth_token"]
    for p in candidates:
        if p.is_file():
            text = p.read_text().strip()
            if text:
                return text
    return None


def resolve_address(address: Optional[str], cfg: Optional[JobConfig] = None) -> str:
    """The dashboard URL to talk to: ``--address``, ``RAY_API_SERVER_ADDRESS``, an http ``RAY_ADDRESS``,
    then an http(s) ``cluster.address`` of the config."""
    candidates = [address, os.environ.get("RAY_API_SERVER_ADDRESS"), os.environ.get("RAY_ADDRESS"),
                  cfg.cluster.address if cfg is not None else None]
    for c in candidates:
        if c and c.startswith(("http://", "https://")):
            return c.rstrip("/")
    raise ConfigError("--address", "the Ray Jobs API needs the cluster's dashboard URL",
                      "pass --address http://HOST:8265 (or set RAY_API_SERVER_ADDRESS, or cluster.address=http://HOST:8265)")


def connect(address: str):
    """A ``JobSubmissionClient`` for ``address`` sending the token as a bearer header.

    Raises:
        ConfigError: the cluster refused the token (or there is none), or it cannot be reached.
    """
    from ray.job_submission import JobSubmissionClient

    from orchestrator.core.console import verbose

    if not verbose():  # Ray's client logs every packaging step of the working dir (set after Ray's import)
        names = [n for n in logging.root.manager.loggerDict if n == "ray" or n.startswith("ray.")]
        for name in names + ["ray._private.runtime_env.packaging", "ray._private.runtime_env.working_dir"]:
            logging.getLogger(name).setLevel(logging.ERROR)
    token = find_token()
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        return JobSubmissionClient(address, headers=headers)
    except Exception as exc:  # Ray raises ConnectionError/RuntimeError with long multi-line texts
        raise _client_error(exc, address, token is not None) from None


def _client_error(exc: BaseException, address: str, had_token: bool) -> ConfigError:
    text = str(exc)
    if "Token authentication is enabled but" in text and "find" in text:  # Ray's client found no token here
        return ConfigError("RAY_AUTH_TOKEN", f"no Ray auth token found for the cluster at {address} (looked in "
                           "RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token)",
                           "export RAY_AUTH_TOKEN=<the cluster's token> (`ray get-auth-token` on the head node prints it); "
                           "RAY_AUTH_MODE=disabled only for a cluster without token auth")
    if "Authentication required" in text or "401" in text or (not had_token and "Unauthorized" in text):
        return ConfigError("RAY_AUTH_TOKEN", f"the Ray cluster at {address} refused the request: no auth token was sent",
                           "export RAY_AUTH_TOKEN=<the cluster's token> or put it in ~/.ray/auth_token "
                           "(`ray get-auth-token` on the head node prints it)")
    if "Authentication failed" in text or "403" in text or "Forbidden" in text:
        return ConfigError("RAY_AUTH_TOKEN", f"the Ray cluster at {address} rejected the auth token",
                           "use the cluster's token (`ray get-auth-token` on the head node) in RAY_AUTH_TOKEN or ~/.ray/auth_token")
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(exc).__name__)
    return ConfigError("--address", f"cannot reach the Ray Jobs API at {address}: {first[:200]}",
                       "check the address and that the cluster is running (cluster/local/start.sh starts one)")


# ------------------------------------------------------------------------------------------- submit
def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~") if "=" in override else override.lstrip("+~")


def _has_credentials(uri: str) -> bool:
    return redact_value(uri) != uri


def pinned_overrides(cfg: JobConfig, overrides: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """(overrides for the job, extra env vars): the user's overrides with workspace, tracking URI and
    cluster address pinned. A tracking URI with credentials travels in ``MLFLOW_TRACKING_URI`` (env)
    and is referenced by interpolation, so it never shows in the entrypoint."""
    kept = [o for o in overrides if _key(o) not in PINNED_KEYS]
    env: dict[str, str] = {}
    uri = cfg.tracking.uri or ""
    if _has_credentials(uri):
        env["MLFLOW_TRACKING_URI"] = uri
        uri_override = "tracking.uri=${oc.env:MLFLOW_TRACKING_URI}"
    else:
        uri_override = f"tracking.uri={uri}"
    return kept + [f"workspace={cfg.workspace}", uri_override, "cluster.address=auto"], env


def new_job_id(cfg: JobConfig) -> str:
    """Readable, unique submission id: ``<kind>-<run_name>-<8 hex>``."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", cfg.run_name)[:40]
    return f"{cfg.kind}-{name}-{secrets.token_hex(4)}"


def runtime_env(extra_env: dict[str, str]) -> dict[str, Any]:
    env = {k: os.environ[k] for k in FORWARDED_ENV if os.environ.get(k)}
    env.update(extra_env)
    env["RAY_JOB_STOP_WAIT_TIME_S"] = STOP_GRACE_S
    from orchestrator.tracking.tracker import git_commit

    env["ORCHESTRATOR_GIT_COMMIT"] = git_commit()  # the uploaded working dir has no .git
    # The job's driver calls ray.init with the workers' env (ray_runtime.worker_env); let it refine
    # rather than conflict with the job-level env vars above.
    env["RAY_OVERRIDE_JOB_RUNTIME_ENV"] = "1"
    return {"working_dir": str(REPO), "excludes": WORKING_DIR_EXCLUDES, "env_vars": env}


def submit(cfg: JobConfig, overrides: Sequence[str], address: str, load: Callable[[str, Sequence[str]], Any],
           client=None, job_id: Optional[str] = None) -> Submitted:
    """Submit the validated ``cfg`` (composed from ``overrides``) as ``python -m jobs.<kind>``; ``load``
    (``orchestrator.kinds.load``) checks that the exact entrypoint overrides compose and validate here."""
    client = client or connect(address)
    job_overrides, extra_env = pinned_overrides(cfg, overrides)
    job_id = job_id or new_job_id(cfg)
    args = job_overrides + [f"resume={cfg.resume}", f"++tracking.tags.{RUN_TAG}={job_id}"]
    _check_composes(cfg.kind, args, extra_env, load)
    entrypoint = shlex.join(["python", "-m", f"jobs.{cfg.kind}", *args])
    metadata = {META_KIND: cfg.kind, META_OVERRIDES: json.dumps(job_overrides), META_RUN_NAME: cfg.run_name,
                META_TRACKING: "" if _has_credentials(cfg.tracking.uri or "") else (cfg.tracking.uri or ""),
                META_EXPERIMENT: cfg.tracking.experiment}
    try:
        client.submit_job(entrypoint=entrypoint, submission_id=job_id, runtime_env=runtime_env(extra_env),
                          metadata=metadata)
    except Exception as exc:
        raise _client_error(exc, address, find_token() is not None) from None
    return Submitted(job_id=job_id, entrypoint=entrypoint, address=address)


def _check_composes(kind: str, args: Sequence[str], extra_env: dict[str, str], load: Callable) -> None:
    """The exact entrypoint overrides must compose here too (they are what the job will run)."""
    saved = {k: os.environ.get(k) for k in extra_env}
    os.environ.update(extra_env)
    try:
        load(kind, args)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def job_metadata(client, job_id: str) -> dict[str, str]:
    """Our metadata of a submitted job (empty for jobs not submitted by ``orchestrator submit``)."""
    info = client.get_job_info(job_id)
    return {k: v for k, v in (info.metadata or {}).items() if k.startswith("orchestrator.")}


# ------------------------------------------------------------------------------------------- MLflow
def find_run(tracking_uri: str, experiment: str, job_id: str, wait_s: float = 0.0):
    """The MLflow run a job created or reopened (tag ``ray_job_id``), waiting up to ``wait_s``."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri)
    deadline = time.time() + wait_s
    while True:
        exp = client.get_experiment_by_name(experiment)
        if exp is not None:
            runs = client.search_runs([exp.experiment_id], filter_string=f"tags.{RUN_TAG} = '{job_id}'", max_results=1)
            if runs:
                return runs[0]
        if time.time() >= deadline:
            return None
        time.sleep(1.0)


def run_link(tracking_uri: str, run) -> str:
    """Browser link of a run on a tracking server; for local stores the run id and where it lives."""
    if tracking_uri.startswith(("http://", "https://")):
        from orchestrator.tracking.ui import ui_link

        return ui_link(tracking_uri, run.info.experiment_id, run.info.run_id)  # opens the model-training view
    return f"run {run.info.run_id} in {redact_value(tracking_uri)} (browse with `mlflow ui --backend-store-uri ...`)"

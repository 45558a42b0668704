"""Imported by Ray into every new worker process of a job's private local Ray, before the process takes
work (Ray's ``preload_python_modules``; see :func:`orchestrator.runtime.ray_runtime.ray_session`).

It imports the modules named in ``ORCHESTRATOR_WORKER_PRELOAD`` (comma-separated; the job's own preload
list, e.g. torch, transformers, DeepSpeed and the training worker) the way a warm host does
(:func:`orchestrator.runtime.preload.import_modules`: optional imports hidden, a failing module skipped).
The raylet starts its prestarted workers while ``ray.init`` is still waiting for the node to register and
while the driver opens its MLflow run, so ~5 s of imports per process overlap that wait instead of
following it. Importing this module has that side effect on purpose; nothing else imports it.
"""

from __future__ import annotations

import os

from orchestrator.runtime.preload import PRELOAD_ENV, import_modules

import_modules(tuple(name for name in os.environ.get(PRELOAD_ENV, "").split(",") if name))

"""The one training driver and worker of pretrain, sft, reward_model and dpo.

* :mod:`.driver` — ``run_training(cfg, task)``: inputs, resume decision, MLflow run, the Ray worker
  group (``fit_worker_group``: the only Ray plumbing), registration.
* :mod:`.worker` — what each worker runs: data, model, DeepSpeed engine, loop, eval, export.
* :mod:`.task` — ``TrainTask``: what a kind plugs in (model, objective, scoring, export); each kind's task
  lives in its module under ``orchestrator/kinds/``.
* :mod:`.loop` — the per-worker loop (batch source + objective), checkpoints, exact resume, evaluation.
* :mod:`.sampler` / :mod:`.data` / :mod:`.records` — deterministic, resumable, rank-aware batches of packed
  blocks or tokenized records; :mod:`.inputs` — upstream models, datasets and tokenizers (driver side).
* :mod:`.reporting` — the loop's only door to Ray (``Reporter``; ``GroupReporter``, ``LocalReporter``).
"""

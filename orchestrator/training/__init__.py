"""Training jobs on Ray Train workers.

* :mod:`.loop` — the per-worker loop shared by pretrain/SFT/reward-model (batch source + objective).
* :mod:`.sampler` / :mod:`.data` — deterministic, resumable, rank-aware sampling of packed blocks.
* :mod:`.reporting` — the loop's only door to Ray (``Reporter``; ``RayTrainReporter``, ``LocalReporter``).
* :mod:`.driver` — ``fit_worker_group(cfg, train_fn, train_loop_config)``: the TorchTrainer (driver side).
* :mod:`.jobs` — ``run_pretrain(cfg)``; :mod:`.pretrain_worker` — what each pretrain worker runs.
"""

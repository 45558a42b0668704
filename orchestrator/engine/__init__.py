"""DeepSpeed engine pieces shared by every training job.

* :mod:`.ds_config` — ``build_ds_config(cfg, plan)``: the DeepSpeed config dict (ZeRO 0-3, offload,
  precision, clipping, accumulation, ``tensor_parallel.autotp_size``).
* :mod:`.tp` — ``init_tp_groups(tp, use_gpu)`` (AutoTP's (data, tensor) mesh as the engine's ``mpu``),
  ``tp_state_dict(engine)`` (TP shards gathered for the export).
* :mod:`.pipe` — ``to_pipeline_module(model, cfg, plan)`` (Llama/GPT-2 as a ``PipelineModule``),
  ``pipeline_train_step``, ``pipeline_eval_loss``, ``pipeline_stage_metrics``, ``pipeline_state_dict``.
* :mod:`.optim` — ``make_optimizer``, ``make_scheduler``, ``lr_factor`` (AdamW, warmup + cosine/linear).
* :mod:`.initialize` — ``init_engine(model, cfg, plan, *, max_steps=None, lr=None, ds_overrides=None)``.
* :mod:`.checkpoint` — ``CheckpointManager(root, keep, rank, world_size)`` ``.save(engine, tag, state)`` /
  ``.load(engine, dir)``; ``latest_committed(root)``, ``capture_rng``/``restore_rng``, ``step_tag``.
* :mod:`.resume` — ``resolve_resume(cfg, root)``, ``shape_fingerprint(cfg)``, ``check_compatible``.
* :mod:`.export` — ``export_hf(engine, out_dir, rank=..., tokenizer_dir=...)``, ``gathered_state_dict``.
"""

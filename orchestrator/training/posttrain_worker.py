"""What each Ray Train worker of an ``sft``, ``reward_model`` or ``dpo`` job runs.

The same engine, loop, checkpoints and exact resume as pretraining (:mod:`orchestrator.training.loop`);
only the model, the batch source (records instead of packed blocks) and the objective differ:

=============  ==========================  ===================  =====================================
kind           model                       data format          objective
=============  ==========================  ===================  =====================================
sft            causal LM                   sft                  response-token NLL (global token mean)
reward_model   LM backbone + scalar head   preference           Bradley-Terry
dpo            causal LM (+ frozen ref)    preference           DPO
=============  ==========================  ===================  =====================================
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

log = logging.getLogger(__name__)

EVAL_FILE = "eval.json"
DATA_FORMAT = {"sft": "sft", "reward_model": "preference", "dpo": "preference"}


@dataclass
class PostTrainArgs:
    """Everything the driver hands each worker."""

    cfg: Any
    plan: Any
    dataset_dir: str
    model_dir: Optional[str]
    """Local HF dir of the upstream model (None = random init from ``model.*``, smoke runs)."""
    reference_dir: Optional[str]
    """DPO only: the frozen reference."""
    tokenizer_dir: str
    resume_dir: Optional[str]
    run_id: Optional[str]
    extra_state: dict[str, Any]
    export_dir: Optional[str]
    attempt_id: str = "0"
    """Unique per driver call: tells a first start from a restart inside the job (see ``select_resume``)."""


def posttrain_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point (``train_loop_per_worker``)."""
    from orchestrator.training.reporting import RayTrainReporter

    args: PostTrainArgs = config["args"]
    run_worker(args, RayTrainReporter(in_place=not args.cfg.cluster.storage_path))


def build_model(args: PostTrainArgs, tok: Any) -> Any:
    from orchestrator.models.build import build_causal_lm, seed_everything
    from orchestrator.models.heads import ScalarHeadModel

    cfg = args.cfg
    special = {"pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id}
    lm = build_causal_lm(cfg.model, cfg.trainer.seed, special_ids=special, local_pretrained_dir=args.model_dir) \
        if args.model_dir else build_causal_lm(_no_pretrained(cfg.model), cfg.trainer.seed, special_ids=special)
    if cfg.kind == "sft" and cfg.sft.lora_rank:
        from peft import LoraConfig, get_peft_model

        o = cfg.sft
        seed_everything(cfg.trainer.seed + 2)  # adapter init, identical on every rank
        return get_peft_model(lm, LoraConfig(r=o.lora_rank, lora_alpha=o.lora_alpha, lora_dropout=o.lora_dropout,
                                             target_modules=list(o.lora_target_modules) if o.lora_target_modules else None,
                                             task_type="CAUSAL_LM"))
    if cfg.kind != "reward_model":
        return lm
    seed_everything(cfg.trainer.seed + 1)  # the head's init is seeded too (identical on every rank)
    return ScalarHeadModel(lm, kind="reward")


def _no_pretrained(m: Any) -> Any:
    import dataclasses

    return dataclasses.replace(m, pretrained=None)


def run_worker(args: PostTrainArgs, reporter: Any) -> dict[str, Any]:
    """Train, evaluate and export on this rank; returns the final eval metrics."""
    from orchestrator.engine.initialize import init_engine, setup_accelerator_env

    cfg, plan = args.cfg, args.plan
    setup_accelerator_env(cfg.cluster.use_gpu)
    import torch
    from transformers import AutoTokenizer

    from orchestrator.data.shards import load_manifest, read_records
    from orchestrator.engine.checkpoint import CheckpointManager
    from orchestrator.models.build import count_params
    from orchestrator.rlhf import objectives as obj
    from orchestrator.rlhf.sources import encode_records, eval_batches, make_source
    from orchestrator.training.loop import LoopSpec, evaluate, restore, select_resume, train_loop

    torch.use_deterministic_algorithms(not cfg.cluster.use_gpu, warn_only=True)
    rank, world = reporter.world_rank, reporter.world_size
    out = Path(cfg.output_dir)
    fmt = DATA_FORMAT[cfg.kind]
    tok = AutoTokenizer.from_pretrained(args.tokenizer_dir)
    manifest = load_manifest(args.dataset_dir)
    max_prompt = cfg.sft.max_prompt_tokens if cfg.kind == "sft" else cfg.model.seq_len // 2
    encoded = encode_records(tok, read_records(args.dataset_dir), fmt, cfg.model.seq_len, max_prompt)
    model = build_model(args, tok)
    num_params = count_params(model)
    engine = init_engine(model, cfg, plan)
    packing = cfg.kind == "sft" and cfg.sft.packing
    dp_rank = rank // (plan.tp_size * plan.pp_size)  # ranks of one TP group read the same examples
    source, eval_idx = make_source(encoded, manifest["digest"], cfg, plan, dp_rank, fmt, tok.pad_token_id, packing)
    held_out = eval_batches(encoded, eval_idx, fmt, tok.pad_token_id, cfg.model.seq_len, plan.micro_batch_size,
                            dp_rank, plan.dp_size)

    if cfg.kind == "sft":
        objective = obj.sft_objective

        def eval_fn() -> dict[str, float]:
            return evaluate(engine, held_out, objective, lambda mb: int(mb["loss_mask"][:, 1:].sum()))
    else:
        if cfg.kind == "reward_model":
            objective = obj.reward_objective(cfg.reward.margin)
        else:
            from transformers import AutoModelForCausalLM

            ref = AutoModelForCausalLM.from_pretrained(args.reference_dir, dtype=torch.float32) if args.reference_dir \
                else build_model(args, tok)
            ref.requires_grad_(False)
            ref.eval()
            objective = obj.dpo_objective(ref, cfg.dpo.beta, cfg.dpo.label_smoothing)
        names = obj.PREFERENCE_METRICS[cfg.kind]

        def eval_fn() -> dict[str, float]:
            return obj.evaluate_pairs(engine, held_out, objective, names)

    ckpts = CheckpointManager(out / "checkpoints", cfg.trainer.keep_checkpoints, rank, world)
    # Our own ``latest`` decides on a restart inside the job (Ray may still name an older checkpoint).
    resume_dir = select_resume(args.resume_dir, ckpts.root, args.attempt_id, rank)
    state = restore(engine, source, ckpts, resume_dir) if resume_dir else None
    sink = None
    if rank == 0 and args.run_id:
        from orchestrator.tracking import MetricsLogger

        sink = MetricsLogger.from_run(cfg.tracking.uri, args.run_id)
    initial = eval_fn() if state is None else {}
    spec = LoopSpec.from_config(cfg, plan, str(out), num_params)
    state = train_loop(engine, source, objective, spec, checkpoints=ckpts, reporter=reporter, state=state,
                       sink=sink, extra_state=args.extra_state, eval_fn=eval_fn)
    final = eval_fn()
    if cfg.kind == "reward_model":
        final.update(_reward_stats(engine, source, encoded))
    if rank == 0:
        prev = json.loads((out / EVAL_FILE).read_text()) if (out / EVAL_FILE).exists() else {}
        initial = {f"initial_{k}": v for k, v in initial.items()} or {k: v for k, v in prev.items() if k.startswith("initial_")}
        (out / EVAL_FILE).write_text(json.dumps({"step": state.step, **initial, **final}, indent=1))
        if sink is not None:
            sink.log(final, state.step)
            sink.close()
    if args.export_dir:
        _export(engine, args, rank, final)
    reporter.report({"step": state.step, **final}, None)
    return final


def _reward_stats(engine: Any, source: Any, encoded: Any, limit: int = 256) -> dict[str, float]:
    """Mean/std of the trained reward over (up to ``limit``) training pairs, chosen and rejected
    alike: stored with the model so PPO can standardise its scores."""
    import torch

    from orchestrator.models.heads import last_token_values
    from orchestrator.rlhf.sources import collate

    idx = source.sampler.indices[:limit]
    engine.eval()
    rewards = []
    with torch.no_grad():
        for i in range(0, len(idx), 32):
            mb = collate([encoded[int(j)] for j in idx[i:i + 32]], "preference", source.pad_id, source.seq_len, False)
            rewards.append(last_token_values(engine(input_ids=mb["input_ids"], attention_mask=mb["attention_mask"]),
                                             mb["attention_mask"]))
    engine.train()
    r = torch.cat(rewards)
    return {"reward_mean": float(r.mean()), "reward_std": float(r.std()), "reward_count": int(r.numel())}


def _export(engine: Any, args: PostTrainArgs, rank: int, final: dict[str, float]) -> None:
    """HF directory + tokenizer; the reward model adds its head and the reward statistics."""
    from orchestrator.engine.export import export_hf, gathered_state_dict
    from orchestrator.rlhf.common import copy_tokenizer

    if args.cfg.kind == "sft" and args.cfg.sft.lora_rank:
        if rank == 0:  # merge the adapters into plain weights: the export is an ordinary HF model
            _save_atomic(engine.module.merge_and_unload(), args.export_dir, args.tokenizer_dir)
        _barrier()
        return
    if args.cfg.kind != "reward_model":
        export_hf(engine, args.export_dir, rank=rank, tokenizer_dir=args.tokenizer_dir)
        return
    state = gathered_state_dict(engine, rank)
    if rank == 0:
        module = engine.module
        if engine.zero_optimization_partition_weights():
            from transformers import AutoTokenizer

            module = build_model(args, AutoTokenizer.from_pretrained(args.tokenizer_dir))
            module.load_state_dict(state)
        module.save(args.export_dir, reward_mean=final["reward_mean"], reward_std=final["reward_std"],
                    reward_count=final["reward_count"], eval_accuracy=final.get("eval_accuracy"))
        copy_tokenizer(args.tokenizer_dir, args.export_dir)
    _barrier()


def _save_atomic(model: Any, out_dir: str, tokenizer_dir: str) -> None:
    import os
    import shutil

    from orchestrator.rlhf.common import copy_tokenizer

    out = Path(out_dir)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), safe_serialization=True)
    copy_tokenizer(tokenizer_dir, tmp)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


def _barrier() -> None:
    import torch

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()

"""The PPO model roles as plain classes; :mod:`orchestrator.rlhf.placement` hosts them in warm Ray processes.

* :class:`PolicyRole` - ``actor`` (trained, generates) and ``reference`` (frozen copy of the initial
  policy, scores log-probs).
* :class:`CriticRole` - value head on an LM backbone (trained).
* The reward role (reward model and/or reward functions) is :class:`orchestrator.rlhf.grpo_roles.RewardFunctionRole`,
  shared with grpo.

Trained roles run a DeepSpeed engine (the project's :func:`init_engine`: ZeRO stage, precision and
clipping from ``parallel``/``trainer``). A role with ``num_workers > 1`` forms its own gloo/NCCL group;
each rank takes a contiguous share of every minibatch, and losses are normalised by the token count
of the *whole* minibatch times the data-parallel size, so DeepSpeed's gradient averaging yields
exactly the single-process minibatch token-mean gradient.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from orchestrator.core.dist import free_port
from orchestrator.rlhf.batches import token_logprobs
from orchestrator.rlhf.losses import entropy_from_logits, logprobs_from_logits, policy_loss, value_loss
from orchestrator.rlhf.masked import masked_mean
from orchestrator.rlhf.rollout import response_slice, select

DS_TAG = "ds"


class RoleBase:
    """Common set-up: threads, seed, (for trained roles) the process group and the engine."""

    role = "base"

    def __init__(self, cfg: Any, rank: int = 0, world_size: int = 1, master: Optional[str] = None) -> None:
        self.cfg, self.rank, self.world_size, self.master = cfg, rank, world_size, master
        torch.set_num_threads(max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
        torch.manual_seed(cfg.trainer.seed + rank)
        self.engine: Any = None

    def ping(self) -> str:
        return f"{self.role}:{self.rank}/{self.world_size} pid={os.getpid()}"

    def _init_dist(self) -> None:
        import deepspeed

        from orchestrator.engine.initialize import prepare_deepspeed

        prepare_deepspeed(self.cfg.cluster.use_gpu)  # before DeepSpeed's comm starts: no op JIT build on CPU
        os.environ.update(LOCAL_RANK="0", RANK=str(self.rank), WORLD_SIZE=str(self.world_size))
        master = self.master if not self.master.endswith(":0") else f"127.0.0.1:{free_port()}"
        backend = "nccl" if self.cfg.cluster.use_gpu else "gloo"
        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, init_method=f"tcp://{master}",
                                   rank=self.rank, world_size=self.world_size)

    def _make_engine(self, module: torch.nn.Module, lr: float, total_updates: int) -> Any:
        from orchestrator.config.plan import make_train_plan
        from orchestrator.engine.initialize import init_engine

        p = getattr(self.cfg, self.cfg.kind)  # the kind's options (ppo, grpo): minibatch_size
        micro = self.cfg.parallel.micro_batch_size
        accum = p.minibatch_size // (micro * self.world_size)
        plan = dataclasses.replace(make_train_plan(self.cfg), world_size=self.world_size, dp_size=self.world_size,
                                   tp_size=1, pp_size=1, grad_accum_steps=accum, micro_batch_size=micro,
                                   global_batch_size=p.minibatch_size)
        self._init_dist()
        return init_engine(module, self.cfg, plan, max_steps=total_updates, lr=lr)

    def _micro_batches(self, mb: dict[str, Any]) -> list[dict[str, Any]]:
        """This rank's share of a minibatch in ``parallel.micro_batch_size`` rows (= grad-accumulation steps)."""
        n = mb["input_ids"].shape[0]
        size = self.cfg.parallel.micro_batch_size
        return [select(mb, np.arange(i, min(i + size, n))) for i in range(0, n, size)]

    def _maybe_record_grad_norm(self, last_micro: bool) -> None:
        """ZeRO-0: DeepSpeed records no norm, so read the (already all-reduced) gradients before the step."""
        if last_micro and self.cfg.parallel.zero_stage == 0:
            from orchestrator.training.metrics import grad_norm

            self._last_grad_norm = grad_norm(self.engine.module)

    def _grad_norm(self) -> float:
        """Global gradient norm of the optimizer step just taken (before clipping), divided by the role
        size so that summing the per-rank stats (as the controller does) gives the norm once."""
        g = self._last_grad_norm if self._last_grad_norm is not None else self.engine.get_global_grad_norm()
        return float(g) / self.world_size if g is not None else float("nan")

    # ---------------------------------------------------------------- checkpoint (trained roles)
    def save(self, ckpt_dir: str) -> None:
        """Collective over the role's ranks: engine (weights, optimizer, LR schedule) + this rank's RNG."""
        import json

        from orchestrator.core.files import atomic_write_text
        from orchestrator.engine.checkpoint import capture_rng

        d = Path(ckpt_dir) / self.role
        d.mkdir(parents=True, exist_ok=True)
        if self.engine is not None:
            self.engine.save_checkpoint(str(d), tag=DS_TAG, save_latest=False)
        atomic_write_text(d / f"rng_rank_{self.rank}.json", json.dumps(capture_rng()))

    def load(self, ckpt_dir: str) -> None:
        import json

        from orchestrator.engine.checkpoint import restore_rng

        d = Path(ckpt_dir) / self.role
        if self.engine is not None:
            path, _ = self.engine.load_checkpoint(str(d), tag=DS_TAG, load_optimizer_states=True,
                                                  load_lr_scheduler_states=True)
            if path is None:
                raise FileNotFoundError(f"no {self.role} engine state in {d}")
        rng = d / f"rng_rank_{self.rank}.json"
        if rng.is_file():
            restore_rng(json.loads(rng.read_text()))

    def die(self) -> None:
        """Fault injection for tests: the process exits hard."""
        os._exit(1)


def _fwd_kwargs(batch: dict[str, Any]) -> dict[str, Any]:
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
            "position_ids": batch["position_ids"]}


class PolicyRole(RoleBase):
    """The policy (``trainable``: the PPO actor) or its frozen reference."""

    def __init__(self, cfg: Any, model_dir: str, trainable: bool, total_updates: int = 1, rank: int = 0,
                 world_size: int = 1, master: Optional[str] = None) -> None:
        super().__init__(cfg, rank, world_size, master)
        from transformers import AutoModelForCausalLM

        self.role = "actor" if trainable else "reference"
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        self._engine: Any = None  # the rollout engine, built on first use
        self.weights_version = 0  # optimizer steps taken (+1 per checkpoint load): the rollout engine must match
        if trainable:
            self.engine = self._make_engine(model, cfg.trainer.lr, total_updates)
            self.model = self.engine.module
        else:
            model.requires_grad_(False)
            model.eval()
            self.model = model

    # ---------------------------------------------------------------- rollout engine (rollout.engine)
    def _rl_options(self) -> Any:
        """The kind's options that hold the sampling settings: ``cfg.ppo`` or ``cfg.grpo``."""
        return getattr(self.cfg, self.cfg.kind)

    def _rollout_engine(self) -> Any:
        """The actor's engine (:mod:`orchestrator.rlhf.rollout_engines`), built on first use from the current weights."""
        if self._engine is None:
            from orchestrator.rlhf.rollout_engines import make_engine

            opts = self._rl_options()
            self._engine = make_engine(self.cfg, self.model, self.rank,
                                       opts.rollout_batch_size * getattr(opts, "group_size", 1))
            self._engine.version = self.weights_version
        return self._engine

    def rollout(self, prompts: dict[str, torch.Tensor], seed: int, eos_id: int | list[int], pad_id: int) -> dict[str, Any]:
        """Sampled ``responses`` [B, R] (R <= max_new_tokens) for left-padded prompts and the engine's
        ``logprobs`` of them (None for ``hf``). Raises ``StaleRolloutEngineError`` when the engine's weights
        version is not the actor's (a skipped :meth:`sync_rollout_engine`). Seeded from (``seed``, rank), so
        a recomputed step (resume, recovery) draws the same responses (see the engines' seeding notes)."""
        from orchestrator.rlhf.rollout_engines import check_version, sampling_from

        engine = self._rollout_engine()
        check_version(engine, self.weights_version)
        return engine.generate(prompts, seed, eos_id, pad_id, sampling_from(self._rl_options()))

    def sync_rollout_engine(self) -> int:
        """Push the current (ZeRO-gathered) weights into the rollout engine; returns the synced version."""
        from orchestrator.rlhf.rollout_engines import full_named_parameters

        engine = self._rollout_engine()
        if engine.version != self.weights_version:
            engine.sync(full_named_parameters(self.model, self.cfg.parallel.zero_stage), self.weights_version)
        return engine.version

    # ---------------------------------------------------------------- separate rollout engines (rollout.layout)
    def get_weights_version(self) -> int:
        """Optimizer steps taken (+1 per checkpoint load): the version every engine must hold before a rollout."""
        return self.weights_version

    def init_weight_group(self, master: str, world_size: int) -> int:
        """Rank 0 hosts the broadcast group to the separate engines (group rank 0, :mod:`.weight_sync`); the
        other ranks join no group (they only take part in the ZeRO-3 gathers of a sync)."""
        from orchestrator.rlhf.weight_sync import WeightGroup

        self.close_weight_group()
        if self.rank == 0:
            self._weight_group = WeightGroup(master, 0, world_size, self.cfg.cluster.use_gpu)
        return self.rank

    def close_weight_group(self) -> None:
        group, self._weight_group = getattr(self, "_weight_group", None), None
        if group is not None:
            group.close()

    def weight_meta(self) -> list[tuple[str, list[int], str]]:
        """Names, full shapes and dtypes of what :meth:`broadcast_weights` sends, in order."""
        from orchestrator.rlhf.weight_sync import weight_meta

        return weight_meta(self.model)

    @torch.no_grad()
    def broadcast_weights(self) -> int:
        """Every rank gathers the parameters one at a time (a collective under ZeRO-3); rank 0 broadcasts each
        to the engines. Returns the version the engines now hold."""
        from orchestrator.rlhf.rollout_engines import full_named_parameters

        params = full_named_parameters(self.model, self.cfg.parallel.zero_stage)
        group = getattr(self, "_weight_group", None)
        if self.rank == 0:
            if group is None:
                raise RuntimeError("actor rank 0 has no weight group: init_weight_group was not called")
            group.send(params)
        else:
            for _ in params:  # the ZeRO-3 gathers only
                pass
        return self.weights_version

    @torch.no_grad()
    def logprobs(self, batch: dict[str, Any]) -> torch.Tensor:
        """[B, R] log-probabilities of the response tokens."""
        self.model.eval()
        return response_slice(token_logprobs(self.model, batch), batch["prompt_len"], shifted=True)

    def train_minibatch(self, mb: dict[str, Any], num_tokens: float) -> dict[str, float]:
        """One optimizer step on this rank's share of a minibatch (see module docstring)."""
        p, P = self.cfg.ppo, mb["prompt_len"]
        self.engine.train()
        stats: dict[str, float] = {}
        micros = self._micro_batches(mb)
        self._last_grad_norm = None
        for micro in micros:
            logits = self.engine(**_fwd_kwargs(micro), use_cache=False).logits[:, :-1]
            logits = logits[:, P - 1:]
            targets = micro["input_ids"][:, P:]
            logp = logprobs_from_logits(logits, targets)
            mask = micro["response_mask"]
            loss, st = policy_loss(logp, micro["old_logprobs"], micro["advantages"], mask, p.clip_eps, num_tokens,
                                   token_weights=micro.get("tis_weights"))
            entropy = masked_mean(entropy_from_logits(logits), mask, num_tokens)
            total = (loss - p.entropy_coef * entropy) * self.world_size
            self.engine.backward(total, scale_wrt_gas=False)
            self._maybe_record_grad_norm(micro is micros[-1])
            self.engine.step()
            for k, v in {"policy_loss": float(loss.detach()), "entropy": float(entropy.detach()), **st}.items():
                stats[k] = stats.get(k, 0.0) + v
        stats["actor_grad_norm"] = self._grad_norm()
        self.weights_version += 1
        return stats

    def load(self, ckpt_dir: str) -> None:
        super().load(ckpt_dir)
        self.weights_version += 1  # new weights: the rollout engine needs a sync


    def export(self, out_dir: str) -> str:
        self.model.save_pretrained(out_dir, safe_serialization=True)
        return out_dir

    def state_fingerprint(self) -> float:
        """Sum of all weights (tests compare runs with it)."""
        return float(sum(p.detach().double().sum() for p in self.model.parameters()))


class CriticRole(RoleBase):
    role = "critic"

    def __init__(self, cfg: Any, model_dir: str, total_updates: int = 1, rank: int = 0, world_size: int = 1,
                 master: Optional[str] = None) -> None:
        super().__init__(cfg, rank, world_size, master)
        from orchestrator.models.heads import load_scalar_model

        model = load_scalar_model(model_dir, kind="value")
        self.engine = self._make_engine(model, cfg.ppo.critic_lr or cfg.trainer.lr, total_updates)
        self.model = self.engine.module

    @torch.no_grad()
    def values(self, batch: dict[str, Any]) -> torch.Tensor:
        self.model.eval()
        return response_slice(self.model(**_fwd_kwargs(batch)), batch["prompt_len"], shifted=False)

    def train_minibatch(self, mb: dict[str, Any], num_tokens: float) -> dict[str, float]:
        p = self.cfg.ppo
        self.engine.train()
        stats: dict[str, float] = {}
        micros = self._micro_batches(mb)
        self._last_grad_norm = None
        for micro in micros:
            values = response_slice(self.engine(**_fwd_kwargs(micro)), micro["prompt_len"], shifted=False)
            loss, st = value_loss(values, micro["old_values"], micro["returns"], micro["response_mask"],
                                  p.value_clip_eps, num_tokens)
            self.engine.backward(loss * self.world_size, scale_wrt_gas=False)
            self._maybe_record_grad_norm(micro is micros[-1])
            self.engine.step()
            for k, v in {"value_loss": float(loss.detach()), **st}.items():
                stats[k] = stats.get(k, 0.0) + v
        stats["critic_grad_norm"] = self._grad_norm()
        return stats


def decode_batch(tok: Any, batch: dict[str, Any]) -> tuple[list[str], list[str]]:
    """Prompt and response texts of a rollout batch (padding and EOS stripped; with a chat template, the
    assistant turn's content without its end-of-turn marker)."""
    P = batch["prompt_len"]
    prompts, responses = [], []
    for ids, att, rmask in zip(batch["input_ids"], batch["attention_mask"], batch["response_mask"]):
        prompt_ids = ids[:P][att[:P].bool()]
        resp = ids[P:][rmask.bool()]
        prompts.append(tok.decode(prompt_ids))
        if getattr(tok, "chat_template", None):
            from orchestrator.rlhf.chat_prompts import response_text

            responses.append(response_text(tok, resp.tolist()))
            continue
        resp = resp[resp != tok.eos_token_id]
        responses.append(tok.decode(resp))
    return prompts, responses

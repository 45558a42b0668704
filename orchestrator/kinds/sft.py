"""``sft``: supervised fine-tuning on prompt/response records, loss on response tokens only.

Shared driver and worker (:mod:`orchestrator.training.driver`); this module supplies the objective
(response-token NLL, a global token mean: see :mod:`orchestrator.training.records`), LoRA adapters
(``sft.lora_rank``, merged into plain weights on export) and example packing (``sft.packing``).
Reads ``data.path`` of format ``sft`` (the demo task when null); output ``model`` (the export).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from orchestrator.config.errors import ConfigError
from orchestrator.config.jobs import TrainJobConfig
from orchestrator.config.rlhf import SFTOptions
from orchestrator.kinds.registry import KindSpec, model_output
from orchestrator.training.task import Objective, TrainTask, WorkerContext


@dataclass
class SFTConfig(TrainJobConfig):
    kind: str = "sft"
    sft: SFTOptions = field(default_factory=SFTOptions)
    """SFT-specific options."""


def check(cfg: SFTConfig) -> None:
    """Option combinations refused before Ray starts."""
    if cfg.sft.packing and cfg.model.arch != "llama":
        raise ConfigError("sft.packing", f"packing needs per-example attention masks, supported here for llama only "
                          f"(model.arch={cfg.model.arch})", "set sft.packing=false or model.arch=llama")
    if cfg.sft.lora_rank and cfg.parallel.zero_stage == 3:
        raise ConfigError("sft.lora_rank", "LoRA merge-on-export needs whole weights, not ZeRO-3 partitions",
                          "use parallel.zero_stage<=2 with LoRA (the frozen base has no optimizer states anyway)")
    if cfg.sft.lora_rank and cfg.parallel.tensor_parallel > 1:
        raise ConfigError("parallel.tensor_parallel", "LoRA adapters cannot be sharded by AutoTP",
                          "set sft.lora_rank=0 or parallel.tensor_parallel=1")
    if cfg.sft.lora_rank:
        import importlib.util

        if importlib.util.find_spec("peft") is None:
            raise ConfigError("sft.lora_rank", "LoRA needs the peft package", "pip install -e '.[lora]'")


def sft_objective(engine: Any, mb: dict) -> tuple[Any, dict[str, float]]:
    """Summed response-token NLL times the batch source's ``loss_scale`` (= the global token mean)."""
    from orchestrator.rlhf.batches import token_logprobs

    lp = token_logprobs(engine, mb)
    mask = mb["loss_mask"][:, 1:]
    nll = -(lp * mask).sum()
    n = mask.sum().clamp(min=1)
    return nll * mb["loss_scale"], {"token_nll": float(nll.detach() / n)}


class SFTTask(TrainTask):
    data_format = "sft"

    def max_prompt_tokens(self, cfg: SFTConfig) -> int:
        return cfg.sft.max_prompt_tokens

    def train_on(self, cfg: SFTConfig) -> str:
        return cfg.sft.train_on

    def build_model(self, ctx: WorkerContext) -> Any:
        lm = super().build_model(ctx)
        o = ctx.cfg.sft
        if not o.lora_rank:
            return lm
        from peft import LoraConfig, get_peft_model

        from orchestrator.models.build import seed_everything

        seed_everything(ctx.cfg.trainer.seed + 2)  # adapter init, identical on every rank
        return get_peft_model(lm, LoraConfig(r=o.lora_rank, lora_alpha=o.lora_alpha, lora_dropout=o.lora_dropout,
                                             target_modules=list(o.lora_target_modules) if o.lora_target_modules else None,
                                             task_type="CAUSAL_LM"))

    def objective(self, ctx: WorkerContext) -> Objective:
        return sft_objective

    def evaluate(self, engine: Any, batches: list, objective: Objective, source: Any) -> dict[str, float]:
        """Response-token loss/perplexity (the first token of a row is never predicted)."""
        from orchestrator.training.loop import evaluate

        return evaluate(engine, batches, objective, lambda mb: int(mb["loss_mask"][:, 1:].sum()))

    def sample_every(self, cfg: SFTConfig) -> int:
        return cfg.sft.sample_every

    def sample_table(self, model: Any, ctx: WorkerContext, held_out: list, objective: Objective) -> dict[str, list]:
        """Held-out prompts, greedy responses, references (see ``training.samples.sft_sample_table``)."""
        from orchestrator.training.samples import sft_sample_table

        o = ctx.cfg.sft
        return sft_sample_table(model, ctx.tokenizer, held_out, o.num_samples_logged, o.sample_max_new_tokens,
                                ctx.cfg.model.seq_len)

    def export(self, engine: Any, ctx: WorkerContext, export_dir: str, final: dict[str, float]) -> None:
        if not ctx.cfg.sft.lora_rank:
            return super().export(engine, ctx, export_dir, final)
        from orchestrator.core.dist import barrier
        from orchestrator.engine.export import save_pretrained_atomic

        if ctx.rank == 0:  # merge the adapters into plain weights: the export is an ordinary HF model
            save_pretrained_atomic(engine.module.merge_and_unload(), export_dir, ctx.tokenizer_dir)
        barrier()


def run(cfg: SFTConfig) -> Mapping[str, Any]:
    from orchestrator.training.driver import run_training

    return run_training(cfg, SFTTask())


SPEC = KindSpec(
    name="sft", config=SFTConfig, run=run, check=check, outputs=model_output, data_format="sft",
    summary="supervised fine-tuning on prompt/response records (response-only loss, packing, LoRA)",
    model_inputs={"*": "model.pretrained"}, key_metrics=("eval_loss", "final_loss", "loss"),
    worker_group=True, tensor_parallel=True,
)

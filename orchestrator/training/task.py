"""What a training kind plugs into the shared driver and worker: a :class:`TrainTask`.

The driver (:mod:`.driver`) and the worker (:mod:`.worker`) own everything the kinds share: inputs,
the MLflow run, the worker group, the DeepSpeed engine, checkpoints, exact resume, recovery,
metrics, eval files and the Hugging Face export. A kind's task supplies only what differs: the model,
the objective, how held-out batches are scored, extra metrics and (when it is not a plain causal LM)
the export, and a sample table (:meth:`TrainTask.log_samples`). Tasks are pickled to the workers, so
they hold no state beyond their class.

This module is imported by the kind modules during validation and dry runs: it imports neither torch
nor Ray; the defaults below import what they use when a worker calls them.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

log = logging.getLogger(__name__)

Objective = Callable[[Any, dict], tuple[Any, dict]]
"""``objective(engine, micro_batch) -> (loss tensor, {metric: float})`` (see :mod:`.loop`)."""


@dataclass
class WorkerContext:
    """What one worker knows while it builds its task's pieces."""

    cfg: Any
    plan: Any
    rank: int
    dp_rank: int
    model_dir: Optional[str]
    """Local HF directory of ``model.pretrained`` (None: random init from ``model.*``)."""
    tokenizer_dir: Optional[str]
    special_ids: dict[str, Optional[int]]
    """pad/bos/eos token ids of the job's tokenizer (or the packed dataset's manifest)."""
    upstream: dict[str, Optional[str]] = field(default_factory=dict)
    """Further local model directories the task asked for (:attr:`TrainTask.upstream_keys`)."""
    tokenizer: Any = None
    """The loaded tokenizer (records formats only)."""
    encoded: Any = None
    """The tokenized records (records formats only)."""


class TrainTask:
    """Defaults: a causal LM trained on records of :attr:`data_format`, exported as a plain HF model."""

    data_format: str = "sft"
    """Dataset format read from ``data.path``: ``pretrain`` (packed blocks) or a records format."""
    initial_eval: bool = True
    """Score the held-out set before the first step too (``initial_*`` in eval.json)."""
    upstream_keys: tuple[str, ...] = ()
    """Config keys of further upstream models the driver resolves (e.g. ``dpo.reference``)."""

    def max_prompt_tokens(self, cfg: Any) -> int:
        """Prompt tokens kept (left-truncated) when records are encoded."""
        return cfg.model.seq_len // 2

    def train_on(self, cfg: Any) -> str:
        """Which assistant messages of a conversation record carry loss (see ``sft.train_on``)."""
        return "all_assistant"

    def build_model(self, ctx: WorkerContext) -> Any:
        """The module the engine trains: ``model.*`` from ``ctx.model_dir`` weights (or random init).

        When the tokenizer outgrew the embeddings (a chat template's control tokens were added to it),
        the embeddings are resized to ``len(tokenizer)`` (new rows initialised like the others, seeded).
        With a chat template, generation stops at its end-of-turn marker (saved in the export's
        ``generation_config.json``).
        """
        from orchestrator.models.build import build_causal_lm

        model_cfg = ctx.cfg.model if ctx.model_dir else dataclasses.replace(ctx.cfg.model, pretrained=None)
        lm = build_causal_lm(model_cfg, ctx.cfg.trainer.seed, special_ids=ctx.special_ids,
                             local_pretrained_dir=ctx.model_dir)
        if ctx.tokenizer is not None and len(ctx.tokenizer) > lm.get_input_embeddings().num_embeddings:
            lm.resize_token_embeddings(len(ctx.tokenizer), mean_resizing=False)
        if ctx.tokenizer is not None and getattr(ctx.tokenizer, "chat_template", None):
            from orchestrator.data.chat_template import stop_token_ids

            # the export's generate() then stops at the end of the assistant turn, not only at EOS
            lm.generation_config.eos_token_id = stop_token_ids(ctx.tokenizer)
        return lm

    def objective(self, ctx: WorkerContext) -> Objective:
        raise NotImplementedError

    def evaluate(self, engine: Any, batches: list, objective: Objective, source: Any) -> dict[str, float]:
        """Held-out metrics (collective over ranks): token-weighted loss and perplexity by default."""
        from orchestrator.training.loop import evaluate

        return evaluate(engine, batches, objective, source.num_tokens)

    def final_metrics(self, engine: Any, source: Any, ctx: WorkerContext) -> dict[str, float]:
        """Extra metrics computed once after training (stored in eval.json and the export)."""
        return {}

    def export(self, engine: Any, ctx: WorkerContext, export_dir: str, final: dict[str, float]) -> None:
        """Collective: write the Hugging Face directory (rank 0), tokenizer included."""
        from orchestrator.engine.export import export_hf

        export_hf(engine, export_dir, rank=ctx.rank, tokenizer_dir=ctx.tokenizer_dir)

    # ------------------------------------------------------------------ sample tables
    def sample_every(self, cfg: Any) -> int:
        """Steps between sample tables; 0 = none (the default: pretrain and reward_model log none)."""
        return 0

    def sample_table(self, model: Any, ctx: WorkerContext, held_out: list, objective: Objective) -> Optional[dict[str, list]]:
        """The table's columns (name -> one value per row) from the unwrapped ``model`` on rank 0 alone (no
        collective); ``held_out``: this rank's held-out micro-batches. None: no table."""
        return None

    def log_samples(self, engine: Any, ctx: WorkerContext, step: int, held_out: list, objective: Objective,
                    sink: Any) -> Optional[str]:
        """Rank 0's hook after each optimizer step: every :meth:`sample_every` steps and at the last step,
        the :meth:`sample_table` goes to ``<output_dir>/samples/step_<k>.json`` and into the run through
        ``sink`` (the rank's ``MetricsLogger``; None: tracking off, the local copy only).

        Only for layouts where rank 0 holds whole weights: with ZeRO-3, tensor or pipeline parallelism a
        forward pass is a collective the other ranks are not in, so no table is made (said once).
        Returns the local copy's path, or None when no table was due.
        """
        cfg, plan = ctx.cfg, ctx.plan
        every = self.sample_every(cfg)
        if ctx.rank != 0 or not every or (step % every and step != cfg.trainer.max_steps):
            return None
        if cfg.parallel.zero_stage == 3 or plan.tp_size > 1 or plan.pp_size > 1:
            if not _SHARDED_WARNED:
                _SHARDED_WARNED.append(True)
                log.warning("no sample tables: rank 0 does not hold whole weights with ZeRO-3, tensor or pipeline "
                            "parallelism (set %s.sample_every=0 to silence this)", cfg.kind)
            return None
        from orchestrator.tracking.samples import log_sample_table, sample_artifact

        model = engine.module
        was_training = model.training
        model.eval()
        try:
            table = self.sample_table(model, ctx, held_out, objective)
        finally:
            model.train(was_training)
        if not table:
            return None
        table = {"step": [step] * len(next(iter(table.values()))), **table}
        path = log_sample_table(getattr(sink, "client", None), getattr(sink, "run_id", None), table, step,
                                cfg.output_dir)
        if hasattr(sink, "table_written"):  # a RelaySink: the driver logs the local copy into the run
            sink.table_written(sample_artifact(step))
        return str(path)


_SHARDED_WARNED: list[bool] = []
"""Whether this process already said that sharded layouts get no sample tables."""

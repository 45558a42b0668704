"""Token batches and batch sources over sft / preference records for the shared training loop.

Conventions: no BOS (as in pretraining), ``ids = prompt + response + [eos]``; ``loss_mask[t] = 1``
where token ``t`` is a response token (EOS included), so the loss of a causal LM is taken on
``logits[:, :-1]`` against ``ids[:, 1:]`` with ``loss_mask[:, 1:]``. Batches are right-padded;
packing puts several examples in one row with a block-diagonal causal mask and per-example
position ids, so no token attends across examples.

Records are tokenized once; a :class:`~orchestrator.training.sampler.StepSampler` (seeded, rank-aware,
resumable) picks the examples of each optimizer step, held-out examples are chosen from the dataset
digest (:func:`~orchestrator.training.sampler.split_heldout`) so every job reading the data agrees.

SFT loss aggregation: each micro-batch carries ``loss_scale = grad_accum * dp / N`` where ``N`` is the
number of response tokens of the *whole global step*; the objective returns ``sum(nll) * loss_scale``,
and after DeepSpeed's 1/grad_accum scaling and the dp gradient average the gradient is exactly the
token mean over the global batch, independent of micro-batching and of the dp split.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
import torch

from orchestrator.training.sampler import StepSampler, split_heldout

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Encoded:
    ids: list[int]
    loss_mask: list[int]


def encode_pair(tok: Any, prompt: str, response: str, seq_len: int, max_prompt_tokens: int) -> Encoded:
    """Prompt (left-truncated to ``max_prompt_tokens``) + response + EOS, cut to ``seq_len``."""
    p = tok(prompt, add_special_tokens=False)["input_ids"][-max_prompt_tokens:]
    r = tok(response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    ids = (p + r)[:seq_len]
    mask = ([0] * len(p) + [1] * len(r))[:seq_len]
    return Encoded(ids, mask)


def pad_batch(items: Sequence[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``loss_mask`` ([B, T], T = longest row)."""
    T = max(len(e.ids) for e in items)
    ids = torch.full((len(items), T), pad_id, dtype=torch.long)
    att = torch.zeros((len(items), T), dtype=torch.long)
    loss = torch.zeros((len(items), T), dtype=torch.float32)
    for i, e in enumerate(items):
        n = len(e.ids)
        ids[i, :n] = torch.tensor(e.ids)
        att[i, :n] = 1
        loss[i, :n] = torch.tensor(e.loss_mask, dtype=torch.float32)
    return {"input_ids": ids, "attention_mask": att, "loss_mask": loss}


def pack_batch(items: Sequence[Encoded], seq_len: int, pad_id: int) -> dict[str, torch.Tensor]:
    """Greedy packing of examples into rows of ``seq_len`` tokens.

    Returns ``input_ids``/``loss_mask`` [R, seq_len], ``position_ids`` restarting at 0 for every
    example, and a boolean ``attention_mask`` [R, 1, seq_len, seq_len] that is causal inside each
    example and False across examples and on padding (transformers accepts such 4-D masks).
    """
    rows: list[list[Encoded]] = [[]]
    used = [0]
    for e in items:
        if used[-1] + len(e.ids) > seq_len:
            rows.append([])
            used.append(0)
        rows[-1].append(e)
        used[-1] += len(e.ids)
    R = len(rows)
    ids = torch.full((R, seq_len), pad_id, dtype=torch.long)
    loss = torch.zeros((R, seq_len), dtype=torch.float32)
    pos = torch.zeros((R, seq_len), dtype=torch.long)
    seg = torch.full((R, seq_len), -1, dtype=torch.long)
    for r, row in enumerate(rows):
        at = 0
        for s, e in enumerate(row):
            n = len(e.ids)
            ids[r, at:at + n] = torch.tensor(e.ids)
            loss[r, at:at + n] = torch.tensor(e.loss_mask, dtype=torch.float32)
            pos[r, at:at + n] = torch.arange(n)
            seg[r, at:at + n] = s
            at += n
    causal = torch.tril(torch.ones(seq_len, seq_len, dtype=torch.bool))
    same = (seg[:, :, None] == seg[:, None, :]) & (seg[:, :, None] >= 0)
    att = (same & causal)[:, None]
    # padding rows attend to themselves only, so softmax never sees an all-masked row
    att = att | torch.eye(seq_len, dtype=torch.bool)[None, None]
    return {"input_ids": ids, "attention_mask": att, "position_ids": pos, "loss_mask": loss}


def is_chat(record: dict) -> bool:
    """Whether a records-dataset record is in canonical chat form (``messages`` / message-list fields)."""
    return isinstance(record.get("messages"), list) or isinstance(record.get("prompt"), list)


def _encode_chat(tok: Any, r: dict, fmt: str, seq_len: int, train_on: str) -> Any:
    """``(Encoded or (chosen, rejected), oldest turns dropped)`` of a canonical chat record; None when it
    cannot fit."""
    from orchestrator.data.chat import tokenize_conversation, tokenize_preference

    if fmt == "sft":
        ex = tokenize_conversation(tok, r["messages"], seq_len, train_on, r.get("id"))
        return None if ex is None else (Encoded(ex["input_ids"], ex["loss_mask"]), ex["num_turns_dropped"])
    pair = tokenize_preference(tok, r["prompt"], r["chosen"], r["rejected"], seq_len, r.get("id"))
    if pair is None:
        return None
    return tuple(Encoded(e["input_ids"], e["loss_mask"]) for e in pair), pair[0]["num_turns_dropped"]


def encode_records(tok: Any, records: Sequence[dict], fmt: str, seq_len: int, max_prompt_tokens: int,
                   train_on: str = "all_assistant", counts: Optional[dict[str, int]] = None) -> list[Any]:
    """``Encoded`` per sft record, ``(chosen, rejected)`` per preference record.

    Flat records (string ``prompt``/``response``/``chosen``/``rejected``) are encoded by
    :func:`encode_pair`. Chat records (``messages``, or message-list ``prompt``/``chosen``/``rejected``)
    are rendered with the tokenizer's chat template, loss on assistant tokens only (``train_on``); a
    conversation that cannot fit ``seq_len`` even without its oldest turns is dropped.

    A chat record this tokenizer refuses (content spelling one of its special tokens, which data_prep,
    not knowing the training tokenizer, lets through; or a record that skipped data_prep) is dropped
    and counted by reason, never fatal.

    Args:
        counts: filled with ``chat`` (chat records seen), ``dropped_too_long``, ``turns_dropped`` and
            ``dropped_malformed``, plus ``malformed_<reason>`` per reason seen.
    """
    from orchestrator.data.chat import ChatFormatError

    out: list[Any] = []
    stats = {"chat": 0, "dropped_too_long": 0, "turns_dropped": 0, "dropped_malformed": 0}
    for r in records:
        if not is_chat(r):
            if fmt == "sft":
                out.append(encode_pair(tok, r["prompt"], r["response"], seq_len, max_prompt_tokens))
            else:
                out.append((encode_pair(tok, r["prompt"], r["chosen"], seq_len, max_prompt_tokens),
                            encode_pair(tok, r["prompt"], r["rejected"], seq_len, max_prompt_tokens)))
            continue
        stats["chat"] += 1
        try:
            enc = _encode_chat(tok, r, fmt, seq_len, train_on)
        except ChatFormatError as e:
            stats["dropped_malformed"] += 1
            stats[f"malformed_{e.reason}"] = stats.get(f"malformed_{e.reason}", 0) + 1
            if stats["dropped_malformed"] <= 3:
                log.warning("conversation dropped: %s", e)
            continue
        if enc is None:
            stats["dropped_too_long"] += 1
        else:
            out.append(enc[0])
            stats["turns_dropped"] += enc[1]
    if stats["dropped_too_long"]:
        log.warning("%d of %d conversations do not fit seq_len=%d even without their oldest turns: dropped",
                    stats["dropped_too_long"], stats["chat"], seq_len)
    if stats["dropped_malformed"]:
        log.warning("%d of %d conversations refused by this tokenizer (%s): dropped", stats["dropped_malformed"],
                    stats["chat"], ", ".join(f"{k[10:]}: {v}" for k, v in stats.items() if k.startswith("malformed_")))
    if counts is not None:
        counts.update(stats)
    return out


def collate(items: Sequence[Any], fmt: str, pad_id: int, seq_len: int, packing: bool) -> dict[str, torch.Tensor]:
    """A micro-batch: SFT rows (padded or packed), or preference rows (chosen first, then rejected)."""
    if fmt == "sft":
        return pack_batch(items, seq_len, pad_id) if packing else pad_batch(items, pad_id)
    chosen: list[Encoded] = [c for c, _ in items]
    rejected: list[Encoded] = [r for _, r in items]
    return pad_batch(chosen + rejected, pad_id)


def response_tokens(e: Any) -> int:
    """Response tokens the loss sees (the first token is never predicted)."""
    return int(sum(e.loss_mask[1:]))


class RecordsBatchSource:
    """Micro-batches of encoded records in :class:`StepSampler` order."""

    def __init__(self, encoded: Sequence[Any], sampler: StepSampler, fmt: str, pad_id: int, seq_len: int,
                 packing: bool = False) -> None:
        self.encoded, self.sampler, self.fmt = encoded, sampler, fmt
        self.pad_id, self.seq_len, self.packing = pad_id, seq_len, packing

    def next_step(self) -> list[dict[str, torch.Tensor]]:
        s = self.sampler
        micro = s.next_step()
        if self.fmt != "sft":
            return [collate([self.encoded[int(i)] for i in idx], self.fmt, self.pad_id, self.seq_len, False)
                    for idx in micro]
        glob = s.global_batch_at(s.consumed - s.global_batch)
        total = max(1, sum(response_tokens(self.encoded[int(i)]) for i in glob))
        scale = len(micro) * s.dp_size / total
        out = []
        for idx in micro:
            mb = collate([self.encoded[int(i)] for i in idx], "sft", self.pad_id, self.seq_len, self.packing)
            mb["loss_scale"] = torch.tensor(scale, dtype=torch.float32)
            out.append(mb)
        return out

    def num_tokens(self, micro_batch: dict[str, torch.Tensor]) -> int:
        return int(micro_batch["loss_mask"].sum())

    def state_dict(self) -> dict[str, Any]:
        return self.sampler.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state)


def make_source(encoded: Sequence[Any], digest: str, cfg: Any, plan: Any, dp_rank: int, fmt: str, pad_id: int,
                packing: bool = False) -> tuple[RecordsBatchSource, np.ndarray]:
    """The training source of one dp rank and the held-out record indices."""
    train_idx, eval_idx = split_heldout(len(encoded), cfg.data.eval_fraction, digest)
    sampler = StepSampler(indices=train_idx, global_batch=plan.global_batch_size, micro_batch=plan.micro_batch_size,
                          dp_rank=dp_rank, dp_size=plan.dp_size, seed=cfg.trainer.seed, shuffle=cfg.data.shuffle)
    return RecordsBatchSource(encoded, sampler, fmt, pad_id, cfg.model.seq_len, packing), eval_idx


def eval_batches(encoded: Sequence[Any], eval_idx: np.ndarray, fmt: str, pad_id: int, seq_len: int,
                 micro_batch: int, dp_rank: int, dp_size: int, limit: Optional[int] = None) -> list[dict[str, torch.Tensor]]:
    """This rank's share of the held-out examples, in micro-batches (padded, never packed)."""
    idx = np.asarray(eval_idx[:limit] if limit else eval_idx)
    mine = idx[dp_rank::dp_size]
    out = []
    for i in range(0, len(mine), micro_batch):
        mb = collate([encoded[int(j)] for j in mine[i:i + micro_batch]], fmt, pad_id, seq_len, False)
        if fmt == "sft":  # per-micro-batch token mean, so loop.evaluate's token weighting is exact
            mb["loss_scale"] = torch.tensor(1.0 / max(1.0, float(mb["loss_mask"][:, 1:].sum())))
        out.append(mb)
    return out

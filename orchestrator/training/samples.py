"""Sample tables of the records kinds (sft, dpo): what the model being trained does on held-out examples.

Rows come from the held-out micro-batches the worker already built (right-padded ``input_ids``,
``attention_mask``, ``loss_mask``; preference batches hold the chosen rows first, then the rejected
ones). The prompt of a row is everything before its last span of loss tokens, the reference (or the
chosen / rejected response) is that span: for flat records the one response, for a conversation its
last assistant reply with the whole conversation before it as the prompt.

Everything here runs on rank 0 alone, on the unwrapped module, with no collective: it is only called
for layouts where rank 0 holds whole weights (see :meth:`orchestrator.training.task.TrainTask.log_samples`).

Public API:
    split_last_span(ids, loss_mask) -> (prompt ids, span ids)
    heldout_rows(batches, n) -> [(prompt ids, reference ids)]
    sft_sample_table(model, tokenizer, batches, n, max_new_tokens) -> table
    dpo_sample_table(model, tokenizer, batches, objective, n) -> table
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Sequence

import torch

Table = dict[str, list]
"""Column name -> one value per row (what ``mlflow.log_table`` takes)."""


def split_last_span(ids: Sequence[int], loss_mask: Sequence[float]) -> tuple[list[int], list[int]]:
    """``(prompt, span)``: the last contiguous run of loss tokens and everything before it.

    A row without loss tokens is all prompt (empty span).
    """
    ids, mask = list(ids), [bool(m) for m in loss_mask]
    end = max((i + 1 for i, m in enumerate(mask) if m), default=0)
    if end == 0:
        return ids, []
    start = end
    while start > 0 and mask[start - 1]:
        start -= 1
    return ids[:start], ids[start:end]


def _rows(batch: dict[str, torch.Tensor]) -> Iterator[tuple[list[int], list[float]]]:
    """``(ids, loss_mask)`` of each row of a right-padded micro-batch, padding removed."""
    for ids, att, mask in zip(batch["input_ids"], batch["attention_mask"], batch["loss_mask"]):
        keep = att.bool()
        yield ids[keep].tolist(), mask[keep].tolist()


def heldout_rows(batches: Sequence[dict[str, torch.Tensor]], n: int) -> list[tuple[list[int], list[int]]]:
    """``(prompt ids, reference ids)`` of the first ``n`` held-out sft rows."""
    out = []
    for batch in batches:
        for ids, mask in _rows(batch):
            if len(out) == n:
                return out
            out.append(split_last_span(ids, mask))
    return out


def _device(model: Any) -> torch.device:
    return next(model.parameters()).device


def _stop_ids(model: Any, tokenizer: Any) -> Any:
    """The chat template's end-of-turn ids when the model was given them (``TrainTask.build_model``), else EOS."""
    stop = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    return stop if stop is not None else tokenizer.eos_token_id


@torch.no_grad()
def greedy(model: Any, tokenizer: Any, prompt: list[int], max_new_tokens: int) -> list[int]:
    """The greedy continuation of ``prompt`` (at most ``max_new_tokens``, stopping at the stop ids)."""
    if max_new_tokens <= 0 or not prompt:
        return []
    x = torch.tensor([prompt], device=_device(model))
    out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), max_new_tokens=max_new_tokens,
                         do_sample=False, pad_token_id=tokenizer.pad_token_id, eos_token_id=_stop_ids(model, tokenizer))
    return out[0, len(prompt):].tolist()


@torch.no_grad()
def mean_nll(model: Any, prompt: list[int], span: list[int]) -> float:
    """Mean per-token negative log-likelihood of ``span`` after ``prompt`` (teacher forced)."""
    if not span:
        return float("nan")
    ids = torch.tensor([prompt + span], device=_device(model))
    logits = model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False).logits[0, :-1].float()
    lp = torch.log_softmax(logits, dim=-1).gather(-1, ids[0, 1:, None])[:, 0]  # lp[t] predicts token t + 1
    return float(-lp[max(len(prompt) - 1, 0):].mean())


def _text(tokenizer: Any, ids: list[int], special: bool = False) -> str:
    return tokenizer.decode(ids, skip_special_tokens=not special).strip()


def sft_sample_table(model: Any, tokenizer: Any, batches: Sequence[dict[str, torch.Tensor]], n: int,
                     max_new_tokens: int, seq_len: int) -> Table:
    """Held-out prompts, the model's greedy responses, the references and two scores.

    Columns: ``prompt`` (special tokens kept: a chat prompt shows its roles), ``response``,
    ``reference``, ``match`` (1.0 when the response equals the reference, whitespace aside) and
    ``reference_nll`` (mean token NLL of the reference under the model: falls as it learns).
    """
    table: Table = {"prompt": [], "response": [], "reference": [], "match": [], "reference_nll": []}
    for prompt, reference in heldout_rows(batches, n):
        room = min(max_new_tokens, seq_len - len(prompt))
        response = _text(tokenizer, greedy(model, tokenizer, prompt, room))
        ref_text = _text(tokenizer, reference)
        table["prompt"].append(_text(tokenizer, prompt, special=True))
        table["response"].append(response)
        table["reference"].append(ref_text)
        table["match"].append(float(" ".join(response.split()) == " ".join(ref_text.split())))
        table["reference_nll"].append(round(mean_nll(model, prompt, reference), 4))
    return table


def _pair(batch: dict[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
    """The micro-batch of pair ``i`` alone: its chosen and its rejected row."""
    b = batch["input_ids"].shape[0] // 2
    return {k: v[[i, b + i]] for k, v in batch.items() if torch.is_tensor(v) and v.dim() >= 1}


@torch.no_grad()
def dpo_sample_table(model: Any, tokenizer: Any, batches: Sequence[dict[str, torch.Tensor]],
                     objective: Callable[[Any, dict], tuple[Any, dict]], n: int) -> Table:
    """Held-out pairs with the implicit rewards the objective gives them under the model being trained.

    Columns: ``prompt``, ``chosen``, ``rejected``, ``chosen_reward`` and ``rejected_reward``
    (``beta * (log pi - log ref)`` of each response) and ``margin`` (their difference: positive when
    the policy prefers the chosen response more than the reference did).
    """
    from orchestrator.training.loop import to_device

    table: Table = {"prompt": [], "chosen": [], "rejected": [], "chosen_reward": [], "rejected_reward": [],
                    "margin": []}
    for batch in batches:
        for i in range(batch["input_ids"].shape[0] // 2):
            if len(table["prompt"]) == n:
                return table
            pair = _pair(batch, i)
            (c_ids, c_mask), (r_ids, r_mask) = _rows(pair)
            prompt, chosen = split_last_span(c_ids, c_mask)
            _, rejected = split_last_span(r_ids, r_mask)
            _, stats = objective(model, to_device(pair, _device(model)))
            table["prompt"].append(_text(tokenizer, prompt, special=True))
            table["chosen"].append(_text(tokenizer, chosen))
            table["rejected"].append(_text(tokenizer, rejected))
            for k in ("chosen_reward", "rejected_reward", "margin"):
                table[k].append(round(float(stats[k]), 5))
    return table

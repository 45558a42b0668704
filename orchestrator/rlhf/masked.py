"""Masked reductions over [batch, T] token tensors (mask = 1 on response tokens).

Masked positions are *selected away* (``torch.where``), never multiplied by 0: ``NaN * 0`` and
``inf * 0`` are NaN, so a NaN or infinite log-prob in the padding would otherwise poison the loss.
"""

from __future__ import annotations

from typing import Optional

import torch


def zero_outside(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x`` where ``mask`` is nonzero, exactly 0 elsewhere (also where ``x`` is NaN or +-inf).

    Applied to the *inputs* of a loss as well as its output, it keeps the gradient at masked positions
    exactly 0 too (``where``'s backward sends 0 to the unselected branch).
    """
    return torch.where(mask.bool(), x, torch.zeros((), dtype=x.dtype, device=x.device))


def masked_sum(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of ``x`` over the positions where ``mask`` is 1 (NaN/inf elsewhere do not leak)."""
    return zero_outside(x, mask).sum()


def masked_mean(x: torch.Tensor, mask: torch.Tensor, num_tokens: Optional[float] = None) -> torch.Tensor:
    """Token mean of ``x`` over ``mask``.

    Args:
        num_tokens: the denominator. ``None`` = ``mask.sum()`` of these tensors. Pass the token count
            of the whole minibatch when ``x`` is one micro-batch of it: the micro-batch terms then add
            up to the minibatch token mean, whatever the micro-batch split (see ``losses``).
    """
    denom = mask.sum() if num_tokens is None else torch.as_tensor(num_tokens, dtype=x.dtype)
    return masked_sum(x, mask) / denom.clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of ``x`` over ``mask`` (Bessel-corrected when ``unbiased`` and more than one token)."""
    mean = masked_mean(x, mask)
    n = mask.sum()
    var = masked_sum((x - mean) ** 2, mask) / n.clamp(min=1)
    if unbiased and n > 1:
        var = var * n / (n - 1)
    return var


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Normalise ``x`` to zero mean and unit variance over the masked tokens of the whole batch.

    ``shift_mean=False`` only rescales (used for rewards, where the sign carries meaning). Positions
    outside the mask are set to 0 so they can never leak into a loss.
    """
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return zero_outside(out, mask)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var[returns - values] / Var[returns] over the masked tokens (1 = perfect critic)."""
    var_r = masked_var(returns, mask)
    if var_r.item() == 0:
        return float("nan")
    return float(1 - masked_var(returns - values, mask) / var_r)

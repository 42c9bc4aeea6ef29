"""Contribution balance of a model's parameter sensitivities: the statistics, defined once.

Xu, Koehn, Murray (EMNLP 2022) argue that a more balanced contribution of parameters generalises
better, and measure balance by the standard deviation of the parameters' sensitivities (lower is
more balanced). :func:`balance_statistics` reports that statistic exactly, as ``std``, beside
scale-free measures of the same idea: coefficient of variation, Gini coefficient, normalised
entropy, the share of the total held by the top 1 % / 10 % of parameters, and the share of
parameters whose sensitivity is near zero.

This module imports torch and numpy only, so that every floor can use it: the analysis of a
finished checkpoint (:mod:`intradist.analysis.balance`), the trainers' live logging, and the
fairseq plugin (:mod:`intradist.live_balance`).
"""

from __future__ import annotations

import math
from typing import Dict, Iterator, Tuple

import numpy as np
import torch

from intradist.errors import UserError

#: Elements per piece of the chunked float64 sums: bounded extra memory for any model size.
CHUNK = 1 << 22
#: A parameter is "near zero" when s_j <= NEAR_ZERO_FRACTION * mean(s).
NEAR_ZERO_FRACTION = 1e-3
#: The top shares reported: percentages of parameters (top1_share, top10_share).
TOP_PERCENTS = (1, 10)


def population_mean_std(values: torch.Tensor) -> Tuple[float, float]:
    """Mean and population standard deviation sqrt(Σ(x − mean)² / n) of a 1-D tensor, summed in
    float64 in chunks (two passes), so 10⁸ float32 values cost O(:data:`CHUNK`) extra memory."""
    total = sum(chunk.double().sum().item() for chunk in values.split(CHUNK))
    mean = total / values.numel()
    squares = sum((chunk.double() - mean).square().sum().item() for chunk in values.split(CHUNK))
    return mean, math.sqrt(squares / values.numel())


def _float64_chunks(values: np.ndarray) -> Iterator[np.ndarray]:
    """``values`` in float64 pieces of :data:`CHUNK` elements (bounded extra memory)."""
    for start in range(0, values.size, CHUNK):
        yield values[start : start + CHUNK].astype(np.float64)


def balance_statistics(values: torch.Tensor) -> Dict[str, float]:
    """Balance of non-negative sensitivities s_1..s_n (a tensor of any shape, flattened).

    - ``num_params``: n; ``mean``: Σs/n.
    - ``std``: the paper's balance statistic, the population standard deviation
      sqrt(Σ(s_j − mean)² / n) over all parameters (Xu et al., 2022).
    - ``cv``: std / mean, the same spread without the scale of the loss.
    - ``gini``: Gini coefficient Σ_i Σ_j |s_i − s_j| / (2 n² mean), computed exactly from the
      ascending sort s_(1) <= ... <= s_(n) as 2 Σ_i i·s_(i) / (n Σs) − (n + 1)/n; 0 = all equal,
      (n − 1)/n = one parameter holds everything.
    - ``normalized_entropy``: −Σ p_j log p_j / log n with p_j = s_j / Σs and 0·log 0 = 0; 1 = all
      equal, 0 = one parameter holds everything (1 by convention when n = 1).
    - ``top1_share``, ``top10_share``: share of Σs held by the ceil(n·1/100) and ceil(n·10/100)
      largest values.
    - ``near_zero_share``: fraction of parameters with s_j <= :data:`NEAR_ZERO_FRACTION` · mean.

    When every s_j is 0, cv, gini, normalized_entropy and the top shares are NaN (0/0) and
    near_zero_share is 1. Sums run in float64 over chunks; one sorted float32 copy of the values
    is the only large allocation, so 10⁸ values need about 400 MB beyond the input.
    """
    flat = values.detach().reshape(-1).cpu()
    if flat.numel() == 0:
        raise UserError("no sensitivities to compute balance statistics on")
    if flat.dtype not in (torch.float32, torch.float64):
        flat = flat.float()
    n = flat.numel()
    mean, std = population_mean_std(flat)  # NaN or inf if any value is: no full-size mask needed
    if not math.isfinite(mean) or flat.min().item() < 0:
        raise UserError("sensitivities must be finite and non-negative to measure balance")
    ordered = np.sort(flat.numpy())
    total = float(sum(chunk.sum() for chunk in _float64_chunks(ordered)))
    threshold = NEAR_ZERO_FRACTION * mean
    statistics: Dict[str, float] = {"num_params": n, "mean": mean, "std": std}
    if total == 0:
        nan = float("nan")
        statistics.update(cv=nan, gini=nan, normalized_entropy=nan, **{f"top{p}_share": nan for p in TOP_PERCENTS})
        statistics["near_zero_share"] = 1.0
        return statistics
    ranked = plogp = 0.0
    for start, chunk in zip(range(0, n, CHUNK), _float64_chunks(ordered)):
        ranked += float(np.dot(np.arange(start + 1, start + chunk.size + 1, dtype=np.float64), chunk))
        p = chunk / total
        plogp += float(np.sum(p * np.log(np.where(p > 0, p, 1.0))))  # 0 log 0 = 0
    statistics.update(
        cv=std / mean,
        gini=2 * ranked / (n * total) - (n + 1) / n,
        normalized_entropy=-plogp / math.log(n) if n > 1 else 1.0,
    )
    for percent in TOP_PERCENTS:
        top = -(-n * percent // 100)  # ceil(n * percent / 100) in integers
        statistics[f"top{percent}_share"] = float(sum(chunk.sum() for chunk in _float64_chunks(ordered[n - top :]))) / total
    near_zero = sum(int(np.count_nonzero(chunk <= threshold)) for chunk in _float64_chunks(ordered))
    statistics["near_zero_share"] = near_zero / n
    return statistics

"""Contribution balance: how evenly the loss depends on a model's parameters.

Xu, Koehn, Murray (EMNLP 2022) argue that a more balanced contribution of parameters generalises
better, and measure balance by the standard deviation of the parameters' sensitivities (lower is
more balanced). :func:`balance_statistics` reports that statistic exactly, as ``std``, beside
scale-free measures of the same idea: coefficient of variation, Gini coefficient, normalised
entropy, the share of the total held by the top 1 % / 10 % of parameters, and the share of
parameters whose sensitivity is near zero.
"""

from __future__ import annotations

from typing import Dict, List, Union

import pandas as pd
import torch

from intradist.analysis.grouping import GRANULARITIES, group_of
from intradist.analysis.sensitivity import ParameterSensitivity
from intradist.balance_statistics import balance_statistics as statistics_of
from intradist.errors import UserError


def balance_statistics(values: Union[torch.Tensor, ParameterSensitivity]) -> Dict[str, float]:
    """:func:`intradist.balance_statistics.balance_statistics` (every statistic defined there, with its
    degenerate cases) of a tensor of sensitivities or of a whole :class:`ParameterSensitivity`."""
    return statistics_of(values.flat() if isinstance(values, ParameterSensitivity) else values)


def balance_by_group(sensitivity: ParameterSensitivity, granularity: str = "layer") -> pd.DataFrame:
    """:func:`balance_statistics` of each group at ``granularity`` (one row each, column ``group``,
    in ``named_parameters`` order), then one row ``all`` over every parameter."""
    if granularity not in GRANULARITIES:
        raise UserError(f"unknown granularity {granularity!r}; choose one of {', '.join(GRANULARITIES)}")
    groups: Dict[str, List[torch.Tensor]] = {}
    for name, value in sensitivity.values.items():
        groups.setdefault(group_of(name, granularity), []).append(value.reshape(-1))
    rows = [{"group": group, **balance_statistics(torch.cat(parts))} for group, parts in groups.items()]
    rows.append({"group": "all", **balance_statistics(sensitivity)})
    return pd.DataFrame(rows)

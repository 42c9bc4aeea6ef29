"""Contribution balance of a checkpoint's sensitivities, whole and per group (layer, module, ...).

The statistics themselves (the paper's std beside scale-free measures of the same idea, each with
its degenerate cases) are defined once, in :mod:`intradist.balance_statistics`, which the trainers'
live logging uses too; this module applies them to a :class:`ParameterSensitivity`.
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

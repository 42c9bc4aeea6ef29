"""The paper's claims about balance, checked on a study's numbers rather than assumed."""

from __future__ import annotations

from typing import Dict, List, Sequence

from intradist.studies.balance.models import StudyModel

#: The statistics the study checks (the paper's std, and two scale-free ones), best when small.
CHECKED_STATISTICS = ("std", "cv", "gini")
NORMALIZATIONS = ("raw", "loss-normalized")


def check_claims(models: Sequence[StudyModel], balance: Dict[str, Dict[str, Dict[str, float]]]) -> List[Dict[str, object]]:
    """For each statistic and normalization: did it fall over the rounds, and is intra below the baseline?

    Smaller is more balanced for every checked statistic. "Falls every round" needs each round
    below the one before; "last round below baseline" compares round R with round 0.
    """
    rounds = sorted((m for m in models if m.round is not None), key=lambda m: m.round)
    intra = next(m for m in models if m.kind == "intra")
    checks = []
    for normalization in NORMALIZATIONS:
        for statistic in CHECKED_STATISTICS:
            values = [balance[m.label][normalization][statistic] for m in rounds]
            intra_value = balance[intra.label][normalization][statistic]
            checks.append({
                "statistic": statistic, "normalization": normalization,
                "rounds": values, "intra": intra_value,
                "falls_every_round": all(b < a for a, b in zip(values, values[1:])),
                "last_round_below_baseline": values[-1] < values[0],
                "intra_below_baseline": intra_value < values[0],
                "intra_below_last_round": intra_value < values[-1],
            })  # fmt: skip
    return checks

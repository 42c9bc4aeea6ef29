"""Balance statistics: hand-computed values, the extreme cases, and brute-force agreement."""

from __future__ import annotations

import math

import pytest
import torch

from intradist.analysis.balance import balance_by_group, balance_statistics
from intradist.analysis.sensitivity import ParameterSensitivity
from intradist.errors import UserError

KEYS = ["num_params", "mean", "std", "cv", "gini", "normalized_entropy", "top1_share", "top10_share", "near_zero_share"]


def test_uniform_values_are_perfectly_balanced():
    n = 250
    stats = balance_statistics(torch.full((n,), 0.7))
    assert list(stats) == KEYS
    assert stats["num_params"] == n
    assert stats["mean"] == pytest.approx(0.7)
    assert stats["std"] == pytest.approx(0, abs=1e-12)
    assert stats["cv"] == pytest.approx(0, abs=1e-12)
    assert stats["gini"] == pytest.approx(0, abs=1e-12)
    assert stats["normalized_entropy"] == pytest.approx(1)
    assert stats["top1_share"] == pytest.approx(3 / n)  # ceil(2.5) = 3 parameters
    assert stats["top10_share"] == pytest.approx(25 / n)
    assert stats["near_zero_share"] == 0


def test_one_non_zero_value_is_maximally_unbalanced():
    n = 50
    values = torch.zeros(n)
    values[17] = 2.0
    stats = balance_statistics(values)
    assert stats["mean"] == pytest.approx(2 / n)
    assert stats["std"] == pytest.approx(2 * math.sqrt(n - 1) / n)  # sqrt(mean of squares − mean²)
    assert stats["gini"] == pytest.approx((n - 1) / n)
    assert stats["normalized_entropy"] == pytest.approx(0, abs=1e-12)
    assert stats["top1_share"] == stats["top10_share"] == 1
    assert stats["near_zero_share"] == pytest.approx((n - 1) / n)


def test_a_hand_computed_vector():
    # s = (1, 0, 3, 0, 4): Σ = 8, mean 1.6, population variance (0.36 + 2.56 + 1.96 + 2.56 + 5.76) / 5 = 2.64.
    # Gini: Σ_{i<j} |s_i − s_j| = 22 over 5² ordered pairs twice: 44 / (2 · 25 · 1.6) = 0.55.
    # Entropy of p = (1/8, 3/8, 4/8), divided by log 5. Top 1 % and 10 %: ceil(0.05) = ceil(0.5) = 1 value, 4 / 8.
    # Near zero: s <= 0.0016 for the two zeros.
    stats = balance_statistics(torch.tensor([1.0, 0.0, 3.0, 0.0, 4.0]))
    entropy = -(1 / 8 * math.log(1 / 8) + 3 / 8 * math.log(3 / 8) + 1 / 2 * math.log(1 / 2))
    expected = {"num_params": 5, "mean": 1.6, "std": math.sqrt(2.64), "cv": math.sqrt(2.64) / 1.6, "gini": 0.55,
                "normalized_entropy": entropy / math.log(5), "top1_share": 0.5, "top10_share": 0.5, "near_zero_share": 0.4}  # fmt: skip
    assert stats == pytest.approx(expected)


def test_top_shares_count_ceil_of_n_times_the_fraction_in_exact_arithmetic():
    stats = balance_statistics(torch.arange(1, 21, dtype=torch.float64))  # Σ = 210
    assert stats["top1_share"] == pytest.approx(20 / 210)  # ceil(0.2) = 1
    assert stats["top10_share"] == pytest.approx((20 + 19) / 210)  # ceil(2) = 2
    # n = 300: 300 · 0.01 is 3.0000000000000004 in floating point, yet the top 1 % is 3 values.
    stats = balance_statistics(torch.arange(1, 301, dtype=torch.float64))
    assert stats["top1_share"] == pytest.approx((300 + 299 + 298) / (300 * 301 / 2))


@pytest.mark.parametrize("seed", range(4))
def test_gini_equals_the_pairwise_mean_absolute_difference_over_twice_the_mean(seed):
    generator = torch.Generator().manual_seed(seed)
    values = torch.rand(300, generator=generator, dtype=torch.float64) ** (seed + 1)
    values[: 30 * seed] = 0  # some exact zeros from the second seed on
    brute_force = (values[:, None] - values[None, :]).abs().mean() / (2 * values.mean())
    assert balance_statistics(values)["gini"] == pytest.approx(brute_force.item(), rel=1e-10)
    p = values / values.sum()
    entropy = -(p[p > 0] * p[p > 0].log()).sum() / math.log(300)
    assert balance_statistics(values)["normalized_entropy"] == pytest.approx(entropy.item(), rel=1e-10)


def test_all_zeros_give_nan_for_the_ratios_and_no_error():
    stats = balance_statistics(torch.zeros(10))
    assert stats["mean"] == stats["std"] == 0
    assert all(math.isnan(stats[key]) for key in ("cv", "gini", "normalized_entropy", "top1_share", "top10_share"))
    assert stats["near_zero_share"] == 1


def test_a_single_parameter_is_balanced():
    stats = balance_statistics(torch.tensor([3.0]))
    assert (stats["gini"], stats["normalized_entropy"], stats["top1_share"]) == (0, 1, 1)


@pytest.mark.parametrize("values", [torch.tensor([]), torch.tensor([1.0, -0.5]), torch.tensor([1.0, float("inf")])], ids=["empty", "negative", "infinite"])
def test_invalid_values_are_a_user_error(values):
    with pytest.raises(UserError):
        balance_statistics(values)


def sensitivity_of(values) -> ParameterSensitivity:
    return ParameterSensitivity(values, [1.0], "taylor", None, 1)


def test_a_parameter_sensitivity_is_measured_over_all_its_values():
    result = sensitivity_of({"a.weight": torch.tensor([[1.0, 0.0], [3.0, 0.0]]), "b.bias": torch.tensor([4.0])})
    assert balance_statistics(result) == balance_statistics(torch.tensor([1.0, 0.0, 3.0, 0.0, 4.0]))


def test_balance_by_group_has_a_row_per_group_and_one_for_all():
    values = {
        "encoder.layers.0.fc1.weight": torch.tensor([[1.0, 2.0]]),
        "encoder.layers.0.fc1.bias": torch.tensor([3.0]),
        "encoder.layers.1.fc1.weight": torch.tensor([[0.0, 5.0]]),
    }
    table = balance_by_group(sensitivity_of(values), "layer")
    assert table["group"].tolist() == ["encoder.layers.0", "encoder.layers.1", "all"]
    assert list(table.columns) == ["group", *KEYS]
    rows = table.set_index("group")
    assert rows.loc["encoder.layers.0"].to_dict() == pytest.approx(balance_statistics(torch.tensor([1.0, 2.0, 3.0])))
    assert rows.loc["encoder.layers.1", "gini"] == pytest.approx(0.5)  # (n − 1)/n with n = 2
    assert rows.loc["all"].to_dict() == pytest.approx(balance_statistics(torch.tensor([1.0, 2.0, 3.0, 0.0, 5.0])))
    with pytest.raises(UserError, match="unknown granularity 'head'"):
        balance_by_group(sensitivity_of(values), "head")

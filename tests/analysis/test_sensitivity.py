"""Taylor and ablation sensitivity agree with brute force and hand-computed values, stream without
side effects, and summarise per group."""

from __future__ import annotations

import copy
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from intradist.analysis.grouping import attention_head_groups
from intradist.analysis.sensitivity import (
    MAX_PARAMETER_ABLATIONS,
    ParameterSensitivity,
    ablation_sensitivity,
    sensitivity,
    taylor_sensitivity,
)
from intradist.errors import UserError


def mse(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return F.mse_loss(model(x), y)


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 2), nn.Tanh(), nn.Linear(2, 2))


def tiny_batches(count: int = 3):
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(4, 3, generator=generator), torch.randn(4, 2, generator=generator)) for _ in range(count)]


def brute_force_mean_loss(model: nn.Module, batches) -> float:
    with torch.no_grad():
        return sum(mse(model, batch).item() for batch in batches) / len(batches)


@pytest.mark.parametrize("variants_per_pass", [1, 8], ids=["one-by-one", "vmapped"])
def test_parameter_ablation_equals_zeroing_each_parameter_by_brute_force(variants_per_pass):
    model, batches = tiny_model(), tiny_batches()
    base = brute_force_mean_loss(model, batches)
    names, losses = [], []
    for name, p in model.named_parameters():
        for flat in range(p.numel()):
            ablated = copy.deepcopy(model)
            with torch.no_grad():
                ablated.get_parameter(name).view(-1)[flat] = 0
            index = np.unravel_index(flat, tuple(p.shape))
            names.append(f"{name}[{','.join(str(int(i)) for i in index)}]")
            losses.append(brute_force_mean_loss(ablated, batches))
    table = ablation_sensitivity(model, batches, mse, granularity="parameter", progress=False, variants_per_pass=variants_per_pass)
    assert table["group"].tolist() == names
    assert (table["num_params"] == 1).all()
    np.testing.assert_allclose(table["loss"], losses, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(table["delta"], np.array(losses) - base, atol=2e-7)
    np.testing.assert_allclose(table["sensitivity"], np.abs(np.array(losses) - base), atol=2e-7)


def test_ablation_restores_every_parameter_bit_for_bit_and_the_mode():
    model, batches = tiny_model(), tiny_batches()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    model.train()
    for granularity, per_pass in [("parameter", 1), ("parameter", 8), ("tensor", 1), ("layer", 8)]:
        ablation_sensitivity(model, batches, mse, granularity=granularity, progress=False, variants_per_pass=per_pass)
    assert model.training
    for name, p in model.named_parameters():
        assert torch.equal(p, before[name]), name


def linear_loss(model: nn.Module, batch) -> torch.Tensor:
    """A loss linear in every parameter: the mean output of a linear layer (plus 5, so it is never 0)."""
    return model(batch).mean() + 5


@pytest.mark.parametrize("normalize", [None, "loss"])
def test_taylor_is_exact_for_a_loss_linear_in_the_parameters(normalize):
    torch.manual_seed(2)
    model = nn.Linear(4, 3)
    batches = [torch.randn(6, 4) for _ in range(3)]
    taylor = taylor_sensitivity(model, batches, linear_loss, normalize=normalize, progress=False).flat()
    exact = ablation_sensitivity(model, batches, linear_loss, granularity="parameter", normalize=normalize, progress=False)
    np.testing.assert_allclose(taylor.numpy(), exact["sensitivity"].to_numpy(), rtol=1e-4, atol=1e-6)


def squared_error(model: nn.Module, batch) -> torch.Tensor:
    x, y = batch
    return (model(x).reshape(()) - y) ** 2


def test_taylor_matches_a_hand_computed_quadratic():
    # L = (w·x − y)² with w = (1, 2), x = (3, −1), y = 0.5: w·x = 1, residual r = 0.5, L = 0.25,
    # ∂L/∂w = 2 r x = (3, −1), so s = |w ⊙ ∂L/∂w| = (3, 2).
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0]]))
    result = taylor_sensitivity(model, [(torch.tensor([3.0, -1.0]), torch.tensor(0.5))], squared_error, progress=False)
    assert result.batch_losses == [0.25]
    assert result.num_batches == 1 and result.method == "taylor" and result.normalize is None
    torch.testing.assert_close(result.values["weight"], torch.tensor([[3.0, 2.0]]))
    assert result.values["weight"].dtype == torch.float32


def one_weight(w: float) -> nn.Module:
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(w)
    return model


# L_b = (w·x_b − y_b)² with w = 2, x = 1: batch 1 (y = 0) has L = 4, ∂L/∂w = 2·2·1 = 4;
# batch 2 (y = 1) has L = 1, ∂L/∂w = 2·1·1 = 2.
TWO_BATCHES = [(torch.tensor([1.0]), torch.tensor(0.0)), (torch.tensor([1.0]), torch.tensor(1.0))]


def test_loss_normalized_taylor_divides_each_batch_term_by_its_loss():
    plain = taylor_sensitivity(one_weight(2.0), TWO_BATCHES, squared_error, progress=False)
    normalized = taylor_sensitivity(one_weight(2.0), TWO_BATCHES, squared_error, normalize="loss", progress=False)
    assert plain.batch_losses == normalized.batch_losses == [4.0, 1.0]
    assert plain.values["weight"].item() == pytest.approx(2 * (4 + 2) / 2)  # |w · mean ∂L_b/∂w| = 6
    assert normalized.values["weight"].item() == pytest.approx(2 * (4 / 4 + 2 / 1) / 2)  # = 3
    assert normalized.normalize == "loss"


def test_loss_normalized_taylor_ignores_the_scale_of_the_loss():
    scaled = lambda model, batch: 7 * squared_error(model, batch)  # noqa: E731
    normalized = taylor_sensitivity(one_weight(2.0), TWO_BATCHES, squared_error, normalize="loss", progress=False)
    rescaled = taylor_sensitivity(one_weight(2.0), TWO_BATCHES, scaled, normalize="loss", progress=False)
    torch.testing.assert_close(rescaled.values["weight"], normalized.values["weight"])


def test_ablation_of_a_hand_case_plain_and_loss_normalized():
    # Zeroing w leaves L_b = y_b² = 0 and 1 (base 4 and 1): mean 0.5 against 2.5, delta −2;
    # per batch (0 − 4)/4 = −1 and (1 − 1)/1 = 0, so the loss-normalized sensitivity is 0.5.
    plain = ablation_sensitivity(one_weight(2.0), TWO_BATCHES, squared_error, progress=False)
    normalized = ablation_sensitivity(one_weight(2.0), TWO_BATCHES, squared_error, normalize="loss", progress=False)
    assert plain.to_dict("records") == [{"group": "weight", "num_params": 1, "loss": 0.5, "delta": -2.0, "sensitivity": 2.0}]
    assert normalized["sensitivity"].tolist() == [pytest.approx(0.5)]
    assert normalized["delta"].tolist() == [-2.0]


def dropout_model() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Linear(3, 8), nn.Dropout(0.5), nn.ReLU(), nn.Linear(8, 2))


def test_taylor_restores_existing_gradients_and_the_train_mode():
    model, batches = dropout_model(), tiny_batches()
    reference = taylor_sensitivity(copy.deepcopy(model).eval(), batches, mse, progress=False)
    model.train()
    existing = {name: torch.full_like(p, 9.0) for name, p in model.named_parameters()}
    for name, p in model.named_parameters():
        p.grad = existing[name]
    result = taylor_sensitivity(model, batches, mse, progress=False)
    assert model.training
    for name, p in model.named_parameters():
        assert p.grad is existing[name] and (p.grad == 9).all()
        torch.testing.assert_close(result.values[name], reference.values[name], rtol=0, atol=0)  # dropout off, old grad unused


def test_taylor_streams_a_generator_like_a_list_and_averages_over_batches():
    model, batches = tiny_model(), tiny_batches(4)
    from_list = taylor_sensitivity(model, batches, mse, progress=False)
    from_generator = taylor_sensitivity(model, (batch for batch in batches), mse, progress=False)
    assert from_generator.num_batches == from_list.num_batches == 4
    assert from_generator.batch_losses == from_list.batch_losses
    for name in from_list.values:
        assert torch.equal(from_generator.values[name], from_list.values[name])
    # Against autograd of the mean loss in one go.
    model.zero_grad()
    (sum(mse(model, batch) for batch in batches) / len(batches)).backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(from_list.values[name], (p.detach() * p.grad).abs())


def test_frozen_parameters_get_no_sensitivity():
    model = tiny_model()
    model[0].weight.requires_grad_(False)
    result = taylor_sensitivity(model, tiny_batches(), mse, progress=False)
    assert list(result.values) == ["0.bias", "2.weight", "2.bias"]
    assert result.flat().numel() == 2 + 4 + 2
    assert model[0].weight.grad is None
    assert ablation_sensitivity(model, tiny_batches(), mse, progress=False)["group"].tolist() == ["0.bias", "2.weight", "2.bias"]


@pytest.mark.parametrize("compute", [taylor_sensitivity, ablation_sensitivity])
def test_no_batches_is_a_user_error(compute):
    with pytest.raises(UserError, match="no batches to compute sensitivity on"):
        compute(tiny_model(), [], mse, progress=False)


@pytest.mark.parametrize("compute", [taylor_sensitivity, ablation_sensitivity])
def test_a_non_finite_loss_names_its_batch(compute):
    batches = tiny_batches()
    batches[1] = (batches[1][0], torch.full((4, 2), float("nan")))
    model = tiny_model()
    with pytest.raises(UserError, match="loss of batch 1 is nan"):
        compute(model, batches, mse, progress=False)
    assert all(p.grad is None for p in model.parameters())


def test_a_non_scalar_loss_or_a_zero_loss_to_normalize_by_is_a_user_error():
    with pytest.raises(UserError, match="scalar tensor; batch 0 gave \\(4, 2\\)"):
        taylor_sensitivity(tiny_model(), tiny_batches(), lambda m, b: m(b[0]), progress=False)
    zero_loss = [(torch.tensor([1.0]), torch.tensor(2.0))]  # w = 2, x = 1, y = 2
    with pytest.raises(UserError, match="loss of batch 0 is 0; normalize='loss'"):
        taylor_sensitivity(one_weight(2.0), zero_loss, squared_error, normalize="loss", progress=False)


def test_parameter_ablation_refuses_models_above_the_limit():
    model = nn.Linear(200, MAX_PARAMETER_ABLATIONS // 200 + 1)
    with pytest.raises(UserError, match="granularity 'parameter'.*use a coarser granularity or method='taylor'"):
        ablation_sensitivity(model, tiny_batches(), mse, granularity="parameter", progress=False)


class ItemUsingModel(nn.Module):
    """A forward with data-dependent Python control flow, which torch.func.vmap cannot run."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.first, self.second = nn.Linear(3, 2), nn.Linear(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.first(x)
        return self.second(hidden if hidden.sum().item() > -1e9 else -hidden)


def test_ablation_falls_back_to_one_group_at_a_time_where_vmap_does_not_apply():
    model, batches = ItemUsingModel(), tiny_batches()
    vmapped = ablation_sensitivity(model, batches, mse, granularity="parameter", progress=False)
    one_by_one = ablation_sensitivity(model, batches, mse, granularity="parameter", progress=False, variants_per_pass=1)
    assert vmapped.equals(one_by_one)


class TinyAttentionModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.attention = nn.MultiheadAttention(8, 4, batch_first=True)
        self.head = nn.Linear(8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.attention(x, x, x, need_weights=False)[0].mean(1))


def test_head_ablation_equals_brute_force_on_a_copy():
    model = TinyAttentionModel()
    generator = torch.Generator().manual_seed(6)
    batches = [(torch.randn(3, 5, 8, generator=generator), torch.randn(3, 2, generator=generator)) for _ in range(2)]
    table = ablation_sensitivity(model, batches, mse, granularity="head", progress=False)
    assert table["group"].tolist() == ["attention.head0", "attention.head1", "attention.head2", "attention.head3"]
    assert table["num_params"].tolist() == [3 * 2 * 8 + 3 * 2] * 4  # q, k, v rows of the weight and bias
    expected = []
    for slices in attention_head_groups(model).values():
        ablated = copy.deepcopy(model)
        with torch.no_grad():
            for tensor, index in slices:
                ablated.get_parameter(tensor)[index] = 0
        expected.append(brute_force_mean_loss(ablated.eval(), batches))
    np.testing.assert_allclose(table["loss"], expected, rtol=1e-6)


def test_head_ablation_without_attention_is_a_user_error():
    with pytest.raises(UserError, match="granularity 'head' found no attention modules"):
        ablation_sensitivity(tiny_model(), tiny_batches(), mse, granularity="head", progress=False)


def test_layer_ablation_zeroes_every_tensor_of_the_layer():
    model, batches = tiny_model(), tiny_batches()
    table = ablation_sensitivity(model, batches, mse, granularity="layer", progress=False)
    assert table["group"].tolist() == ["0", "2"] and table["num_params"].tolist() == [8, 6]
    ablated = copy.deepcopy(model)
    with torch.no_grad():
        ablated[2].weight.zero_()
        ablated[2].bias.zero_()
    assert table["loss"][1] == pytest.approx(brute_force_mean_loss(ablated, batches))  # outputs 0: loss = mean y²


def test_table_sums_each_group_and_summarises_it():
    values = {
        "encoder.layers.0.fc1.weight": torch.tensor([[1.0, 2.0], [3.0, 4.0]]),
        "encoder.layers.0.fc1.bias": torch.tensor([5.0, 6.0]),
        "encoder.layers.1.fc1.weight": torch.tensor([[0.0, 0.5], [0.5, 1.0]]),
        "decoder.embed_tokens.weight": torch.tensor([[7.0]]),
    }
    result = ParameterSensitivity(values, [1.0], "taylor", None, 1)
    layers = result.table("layer").set_index("group")
    assert layers.index.tolist() == ["encoder.layers.0", "encoder.layers.1", "decoder.embed_tokens"]
    assert layers["sum"].tolist() == [21.0, 2.0, 7.0]
    assert layers["num_params"].tolist() == [6, 4, 1]
    assert layers.loc["encoder.layers.0", "mean"] == pytest.approx(3.5)
    assert layers.loc["encoder.layers.0", "std"] == pytest.approx(math.sqrt(17.5 / 6))  # population
    assert layers.loc["encoder.layers.0", "median"] == pytest.approx(3.5)
    assert layers.loc["encoder.layers.1", ["min", "max", "median"]].tolist() == [0.0, 1.0, 0.5]
    assert layers.loc["encoder.layers.0", "module_type"] == "encoder.layers.*.fc1"
    types = result.table("module_type").set_index("group")
    assert types.loc["encoder.layers.*.fc1", "sum"] == 23.0
    assert pd.isna(types.loc["encoder.layers.*.fc1", "layer"])  # spans two layers
    tensors = result.table()
    assert tensors["sum"].tolist() == [10.0, 11.0, 2.0, 7.0]
    assert list(tensors.columns) == ["group", "layer", "module_type", "num_params", "sum", "mean", "std", "min", "max", "median"]


def test_parameter_table_summarises_each_tensor_instead_of_listing_parameters():
    values = {"a.weight": torch.arange(101, dtype=torch.float32), "b.bias": torch.ones(3)}
    table = ParameterSensitivity(values, [1.0], "taylor", None, 1).table("parameter")
    assert len(table) == 2
    assert list(table.columns) == ["group", "layer", "module_type", "num_params", "mean", "std", "min",
                                   "q01", "q10", "q50", "q90", "q99", "max"]  # fmt: skip
    first = table.iloc[0]
    assert [first[c] for c in ("num_params", "mean", "min", "q01", "q10", "q50", "q90", "q99", "max")] == [101, 50, 0, 1, 10, 50, 90, 99, 100]
    assert first["std"] == pytest.approx(math.sqrt((101**2 - 1) / 12))  # population std of 0..100


def test_the_one_call_api_dispatches_and_names_the_choices():
    model, batches = tiny_model(), tiny_batches()
    taylor = sensitivity(model, batches, mse, granularity="layer", progress=False)
    assert taylor.equals(taylor_sensitivity(model, batches, mse, progress=False).table("layer"))
    ablation = sensitivity(model, batches, mse, method="ablation", granularity="layer", progress=False)
    assert ablation.equals(ablation_sensitivity(model, batches, mse, granularity="layer", progress=False))
    with pytest.raises(UserError, match="unknown method 'fisher'; choose one of taylor, ablation"):
        sensitivity(model, batches, mse, method="fisher")
    with pytest.raises(UserError, match="'head' needs method='ablation'"):
        sensitivity(model, batches, mse, granularity="head")
    with pytest.raises(UserError, match="unknown granularity 'row'.*module_type, head"):
        sensitivity(model, batches, mse, method="ablation", granularity="row")
    with pytest.raises(UserError, match="unknown normalize 'mean'"):
        sensitivity(model, batches, mse, normalize="mean")

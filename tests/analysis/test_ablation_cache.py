"""Ablation that reuses the activations below the ablated group equals the naive loop (a copy of the
model per group, the group zeroed, the whole forward), on real fairseq and BERT models, and falls
back to the whole forward where the model's calls or outputs do not allow reuse."""

from __future__ import annotations

import copy
from typing import Any, Callable, Dict, List

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from intradist.analysis.grouping import attention_head_groups, group_of
from intradist.analysis.sensitivity import ablation_sensitivity

#: Relative tolerance of "equal to the naive loop".
RTOL = 1e-6


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine: a second thread only waits for the first."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def naive_losses(model: nn.Module, batches: List[Any], loss_fn: Callable, granularity: str) -> Dict[str, float]:
    """Group -> mean loss over the batches of a deep copy with the group zeroed (eval mode, no_grad)."""
    if granularity == "head":
        groups = attention_head_groups(model)
    else:
        groups = {}
        for name, _ in model.named_parameters():
            groups.setdefault(group_of(name, granularity), []).append((name, (Ellipsis,)))
    losses = {}
    for group, slices in groups.items():
        ablated = copy.deepcopy(model).eval()
        with torch.no_grad():
            for name, index in slices:
                ablated.get_parameter(name)[index] = 0
            losses[group] = sum(loss_fn(ablated, batch).item() for batch in batches) / len(batches)
    return losses


def assert_equals_naive(model, batches, loss_fn, granularity, evaluation="reused activations"):
    table = ablation_sensitivity(model, batches, loss_fn, granularity=granularity, progress=False)
    assert table.attrs["evaluation"] == evaluation
    expected = naive_losses(model, batches, loss_fn, granularity)
    assert table["group"].tolist() == list(expected)
    np.testing.assert_allclose(table["loss"].to_numpy(), list(expected.values()), rtol=RTOL, atol=0)
    return table


@pytest.fixture(scope="module")
def fairseq_model(teacher_checkpoint, tiny_data_bin):
    from intradist.analysis.batches import BatchOptions, make_batches
    from intradist.analysis.loading import load_checkpoint

    loaded = load_checkpoint(teacher_checkpoint, data=tiny_data_bin)
    batches = make_batches(loaded, BatchOptions(data=tiny_data_bin, max_batches=2, max_tokens=300))
    return loaded, batches


@pytest.mark.parametrize("granularity", ["layer", "tensor"])
def test_a_fairseq_transformer_checkpoint_equals_the_naive_loop(fairseq_model, granularity):
    loaded, batches = fairseq_model
    table = assert_equals_naive(loaded.model, batches, loaded.loss_fn, granularity)
    groups = set(table["group"])
    assert {"encoder.layers.0", "decoder.layers.0"} <= groups or "encoder.layers.0.fc1.weight" in groups
    assert (table["sensitivity"] > 0).sum() > len(table) // 2  # the groups change the loss: not trivially equal


def test_a_deeper_fairseq_encoder_decoder_equals_the_naive_loop(fairseq_model):
    """3 + 3 layers of the checkpoint's architecture (random weights): an encoder layer's group recomputes
    the rest of the encoder and the whole decoder, a decoder layer's group the decoder from that layer on."""
    loaded, batches = fairseq_model
    cfg = copy.deepcopy(loaded.extras["cfg"].model)
    cfg.encoder_layers = cfg.decoder_layers = 3
    torch.manual_seed(0)
    model = loaded.extras["task"].build_model(cfg).eval()
    for granularity in ("layer", "tensor"):
        assert_equals_naive(model, batches, loaded.loss_fn, granularity)


def tiny_bert():
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
                        max_position_embeddings=32, num_labels=3)  # fmt: skip
    torch.manual_seed(0)
    model = BertForSequenceClassification(config).eval()
    generator = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(2):
        ids = torch.randint(5, 120, (4, 12), generator=generator)
        mask = torch.ones_like(ids)
        mask[1, 8:] = mask[3, 5:] = 0  # padded rows
        batches.append({"input_ids": ids * mask, "attention_mask": mask, "labels": torch.randint(3, (4,), generator=generator)})
    return model, batches


def own_loss(model, batch):
    """The model's own loss for a batch holding ``labels`` (cross-entropy for a classifier)."""
    return model(**batch).loss


@pytest.mark.parametrize("granularity", ["layer", "tensor", "head"])
def test_a_tiny_bert_equals_the_naive_loop(granularity):
    model, batches = tiny_bert()
    assert_equals_naive(model, batches, own_loss, granularity)


def test_torch_transformer_encoder_with_its_fused_path_equals_the_naive_loop():
    """torch's TransformerEncoderLayer takes its fused path only where no torch-function mode is active:
    the record sees other module calls than a plain forward, so capture and replay run under a mode too."""
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(16, 2, 32, dropout=0.1, batch_first=True)
    model = nn.Sequential(nn.Embedding(50, 16), nn.TransformerEncoder(layer, 3, enable_nested_tensor=False), nn.Linear(16, 50))
    generator = torch.Generator().manual_seed(2)
    batches = [(torch.randint(50, (3, 7), generator=generator), torch.randint(50, (3, 7), generator=generator)) for _ in range(2)]

    def next_token(model, batch):
        return F.cross_entropy(model(batch[0]).flatten(0, 1), batch[1].flatten())

    assert_equals_naive(model.eval(), batches, next_token, "layer")


def mse(model, batch):
    return F.mse_loss(model(batch[0]), batch[1])


def vector_batches(width: int = 4):
    generator = torch.Generator().manual_seed(3)
    return [(torch.randn(5, width, generator=generator), torch.randn(5, 2, generator=generator)) for _ in range(2)]


class Branching(nn.Module):
    """Calls ``extra`` only while the first layer's output sums to more than 0: zeroing the first layer
    changes which modules the forward calls."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(4)
        self.first, self.extra, self.head = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)
        with torch.no_grad():
            self.first.bias.fill_(3.0)

    def forward(self, x):
        hidden = self.first(x)
        if hidden.sum() > 0:
            hidden = self.extra(hidden)
        return self.head(hidden)


def test_a_group_that_changes_the_module_calls_is_run_in_full():
    assert_equals_naive(Branching(), vector_batches(), mse, "layer")


class Positions(nn.Module):
    """Returns its parameter itself: the caller reads it after this call has returned."""

    def __init__(self) -> None:
        super().__init__()
        self.table = nn.Parameter(torch.randn(4))

    def forward(self):
        return self.table


class DoubleInPlace(nn.Module):
    """Changes its input in place and returns nothing the caller uses."""

    def forward(self, x):
        x.mul_(2)
        return x.sum()


class AwkwardModules(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.first, self.positions, self.doubler, self.head = nn.Linear(4, 4), Positions(), DoubleInPlace(), nn.Linear(4, 2)

    def forward(self, x):
        table = self.positions()
        hidden = self.first(x)
        self.doubler(hidden)
        return self.head(hidden + table)


def test_calls_that_return_a_parameter_or_change_their_input_are_run_not_replayed():
    assert_equals_naive(AwkwardModules(), vector_batches(), mse, "tensor")


class Alternating(nn.Module):
    """Calls ``odd`` and ``even`` on alternate forwards: no record describes the next forward."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(6)
        self.odd, self.even, self.count = nn.Linear(4, 2), nn.Linear(4, 2), 0

    def forward(self, x):
        self.count += 1
        return (self.odd if self.count % 2 else self.even)(x)


def test_a_model_whose_calls_change_from_run_to_run_falls_back_to_the_whole_forward():
    table = ablation_sensitivity(Alternating(), vector_batches(), mse, granularity="tensor", progress=False)
    assert table.attrs["evaluation"] in ("vmapped", "one by one") and len(table) == 4


def test_reuse_can_be_switched_off_and_gives_the_same_table():
    model, batches = tiny_bert()
    reused = ablation_sensitivity(model, batches, own_loss, granularity="layer", progress=False)
    full = ablation_sensitivity(model, batches, own_loss, granularity="layer", progress=False,
                                reuse_activations=False, variants_per_pass=1)  # fmt: skip
    assert reused.attrs["evaluation"] == "reused activations" and full.attrs["evaluation"] == "one by one"
    np.testing.assert_allclose(reused[["loss", "delta", "sensitivity"]], full[["loss", "delta", "sensitivity"]], rtol=RTOL)
    for name, p in model.named_parameters():  # every parameter restored, and no wrapper left behind
        assert "forward" not in model.get_submodule(name.rpartition(".")[0]).__dict__

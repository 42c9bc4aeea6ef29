#!/usr/bin/env python
"""Grouped ablation (``intradist.analysis.sensitivity.ablation_sensitivity``) against a naive loop, in one run.

The naive loop is what one writes first: for every group, ``copy.deepcopy`` the model, zero the
group in the copy, and recompute the mean loss over all batches (eval mode, autograd left on as
by default). ``naive, no_grad`` is the same loop under ``torch.no_grad``, to show how much of the
gain is autograd alone. ``whole forward`` is ``ablation_sensitivity(reuse_activations=False)``: zero
in place, restore, no autograd, several consecutive groups in one vmapped forward per batch where
the model allows it, every group running the whole forward. ``reused activations`` is the default:
per batch, one unablated forward keeps the outputs of the modules, and each group recomputes only
from the first read of its parameters on (for a group in layer k: layers k..n-1 and the output
projection, from layer k's cached input).

Two models, vocabulary 1000, d = 128, 4 heads, FFN 512, 6 layers, same random batches
(``--batches`` x 8 sequences x 32 tokens, next-token cross-entropy):

- ``torch``: torch.nn.TransformerEncoder (its fused eval fast path where no torch-function mode is
  active; vmap does not apply, so the whole forward runs one group at a time);
- ``fairseq-like``: the same shape written with fairseq's module layout (``q_proj``/``k_proj``/
  ``v_proj``, ``num_heads``, ``head_dim``) in plain torch.

Each timing is the minimum over ``--repeats`` rounds, the four methods interleaved in each round
(the machine may be shared). The largest relative difference between the naive loop's and the
reused activations' ablated losses is printed as a check. ``naive / reused FLOPs`` is the ratio of
the floating-point operations the two run, as counted by ``torch.utils.flop_counter`` (matrix
products, which are almost all of this model's work): where the machine is compute-bound, no
exact method that recomputes what depends on the ablated group can be faster than that ratio
allows, beyond the naive loop's own overheads (autograd, ``copy.deepcopy``).

    OMP_NUM_THREADS=1 python benchmarks/ablation_speed.py
    python benchmarks/ablation_speed.py --granularity layer --granularity head --repeats 5
"""

from __future__ import annotations

import copy
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence, Tuple

import click
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from intradist.analysis.grouping import attention_head_groups, group_of  # noqa: E402
from intradist.analysis.sensitivity import ablation_sensitivity  # noqa: E402

VOCABULARY, WIDTH, HEADS, FFN, LAYERS = 1000, 128, 4, 512, 6


class SelfAttention(nn.Module):
    """Multi-head self-attention with fairseq's attribute and child names."""

    def __init__(self) -> None:
        super().__init__()
        self.num_heads, self.head_dim = HEADS, WIDTH // HEADS
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(WIDTH, WIDTH) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        q, k, v = (p(x).view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))  # fmt: skip
        weights = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.head_dim), dim=-1)
        return self.out_proj((weights @ v).transpose(1, 2).reshape(batch, length, WIDTH))


class Block(nn.Module):
    """Post-norm transformer block (fairseq's default)."""

    def __init__(self) -> None:
        super().__init__()
        self.self_attn, self.self_attn_layer_norm = SelfAttention(), nn.LayerNorm(WIDTH)
        self.fc1, self.fc2, self.final_layer_norm = nn.Linear(WIDTH, FFN), nn.Linear(FFN, WIDTH), nn.LayerNorm(WIDTH)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.self_attn_layer_norm(x + self.self_attn(x))
        return self.final_layer_norm(x + self.fc2(F.relu(self.fc1(x))))


class LanguageModel(nn.Module):
    """Embedding -> encoder -> output projection, with either encoder."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.embed_tokens, self.encoder = nn.Embedding(VOCABULARY, WIDTH), encoder
        self.output_projection = nn.Linear(WIDTH, VOCABULARY)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.output_projection(self.encoder(self.embed_tokens(tokens)))


class FairseqLikeEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layers = nn.ModuleList(Block() for _ in range(LAYERS))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


def build(kind: str) -> nn.Module:
    torch.manual_seed(1)
    if kind == "torch":
        layer = nn.TransformerEncoderLayer(WIDTH, HEADS, FFN, dropout=0.1, batch_first=True)
        return LanguageModel(nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)).eval()
    return LanguageModel(FairseqLikeEncoder()).eval()


def loss_fn(model: nn.Module, batch: Tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    tokens, targets = batch
    return F.cross_entropy(model(tokens).flatten(0, 1), targets.flatten())


def groups_of(model: nn.Module, granularity: str) -> Dict[str, List[Tuple[str, Any]]]:
    """The same groups as ablation_sensitivity, rebuilt from the public grouping functions."""
    if granularity == "head":
        return attention_head_groups(model)
    groups: Dict[str, List[Tuple[str, Any]]] = {}
    for name, _ in model.named_parameters():
        groups.setdefault(group_of(name, granularity), []).append((name, (Ellipsis,)))
    return groups


def naive(model: nn.Module, batches: Sequence[Any], granularity: str, grad: bool) -> List[float]:
    """Deep copy per group, zero the group in the copy, mean loss over all batches."""
    losses = []
    for slices in groups_of(model, granularity).values():
        ablated = copy.deepcopy(model)
        with torch.no_grad():
            for name, index in slices:
                ablated.get_parameter(name)[index] = 0
        with torch.set_grad_enabled(grad):
            losses.append(sum(loss_fn(ablated, batch).item() for batch in batches) / len(batches))
    return losses


def fastest(runs: Dict[str, Callable[[], Any]], repeats: int) -> Tuple[Dict[str, float], Dict[str, Any]]:
    """Each run's minimum wall time over ``repeats`` rounds, the runs interleaved within a round (so
    a burst of other load hits one round, not one method), and each run's last result."""
    seconds = {name: math.inf for name in runs}
    results: Dict[str, Any] = {}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            results[name] = run()
            seconds[name] = min(seconds[name], time.perf_counter() - start)
    return seconds, results


def flops(run: Callable[[], Any]) -> int:
    """The floating-point operations ``run`` performs, as torch's FLOP counter counts them."""
    with FlopCounterMode(display=False) as counter:
        run()
    return counter.get_total_flops()


@click.command()
@click.option("--granularity", "granularities", multiple=True, default=("layer", "tensor"), show_default=True)
@click.option("--batches", "num_batches", default=4, show_default=True, help="Batches of 8 x 32 tokens.")
@click.option("--repeats", default=2, show_default=True, help="Timings are the minimum over this many runs.")
def main(granularities: Sequence[str], num_batches: int, repeats: int) -> None:
    """Print a table: seconds per method, and the speed-up of reused activations over the naive loop."""
    warnings.simplefilter("ignore")
    generator = torch.Generator().manual_seed(0)
    batches = [(torch.randint(VOCABULARY, (8, 32), generator=generator), torch.randint(VOCABULARY, (8, 32), generator=generator))
               for _ in range(num_batches)]  # fmt: skip
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s), {os.cpu_count()} CPU(s), {LAYERS} layers, "
          f"{num_batches} batches of 8 x 32 tokens, minimum of {repeats} run(s)\n")  # fmt: skip
    print("| model | granularity | groups | naive (s) | naive, no_grad (s) | whole forward (s) | reused activations (s) "
          "| naive / reused | whole forward / reused | naive / reused FLOPs | max relative difference |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for kind in ("torch", "fairseq-like"):
        model = build(kind)
        for granularity in granularities:
            runs = {
                "naive": lambda: naive(model, batches, granularity, grad=True),
                "no_grad": lambda: naive(model, batches, granularity, grad=False),
                "whole": lambda: ablation_sensitivity(model, batches, loss_fn, granularity, progress=False,
                                                      reuse_activations=False),
                "reused": lambda: ablation_sensitivity(model, batches, loss_fn, granularity, progress=False),
            }  # fmt: skip
            seconds, results = fastest(runs, repeats)
            table, whole = results["reused"], results["whole"]
            flop_ratio = flops(runs["naive"]) / flops(runs["reused"])
            if table.attrs["evaluation"] != "reused activations":
                raise SystemExit(f"{kind}, {granularity}: the activations were not reused ({table.attrs['evaluation']})")
            difference = max(abs(a - b) / abs(a) for a, b in zip(results["naive"], table["loss"]))
            print(f"| {kind} | {granularity} | {len(table)} | {seconds['naive']:.3f} | {seconds['no_grad']:.3f} "
                  f"| {seconds['whole']:.3f} ({whole.attrs['evaluation']}) | {seconds['reused']:.3f} "
                  f"| {seconds['naive'] / seconds['reused']:.2f}x | {seconds['whole'] / seconds['reused']:.2f}x "
                  f"| {flop_ratio:.2f}x | {difference:.1e} |")  # fmt: skip


if __name__ == "__main__":
    main()

"""Parameter sensitivity: how much the loss depends on each parameter.

Xu, Koehn, Murray, *The Importance of Being Parameters: An Intra-Distillation Method for Serious
Gains* (EMNLP 2022) call the sensitivity of parameter θ_j the loss change when it is zeroed,
|L(Θ) − L(Θ with θ_j = 0)|, and estimate it to first order by s_j = |θ_j · ∂L/∂θ_j|.

- :func:`taylor_sensitivity`: that estimate for every parameter, streaming over the batches.
- :func:`ablation_sensitivity`: the exact loss change for groups of parameters (tensors, modules,
  layers, attention heads, or each scalar of a tiny model), to validate the estimate.
- :func:`sensitivity`: either one as a DataFrame, the one-call API.

Everything needs only a model, batches and ``loss_fn(model, batch) -> scalar tensor``; the
loss L̄ is the mean of the batch losses, computed with the model in eval mode (dropout off).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.func import functional_call, vmap
from tqdm.auto import tqdm

from intradist.analysis.grouping import GRANULARITIES, ParameterSlice, attention_head_groups, group_of, layer_of, module_type_of
from intradist.errors import UserError

#: Computes the scalar loss of ``model`` on one batch; called in eval mode.
LossFn = Callable[[nn.Module, Any], torch.Tensor]

METHODS: Tuple[str, ...] = ("taylor", "ablation")
#: ``None``: plain loss; ``"loss"``: each batch's term divided by that batch's loss.
NORMALIZATIONS: Tuple[Optional[str], ...] = (None, "loss")
#: Ablation can also remove single attention heads (see :func:`intradist.analysis.grouping.attention_head_groups`).
ABLATION_GRANULARITIES: Tuple[str, ...] = (*GRANULARITIES, "head")
#: Ablation at "parameter" granularity runs one loss evaluation per scalar: refused above this.
MAX_PARAMETER_ABLATIONS = 20_000
#: The quantiles of the "parameter" summary table (numpy's linear interpolation).
QUANTILES: Tuple[float, ...] = (0.01, 0.10, 0.50, 0.90, 0.99)
#: Groups evaluated in one vmapped forward by :func:`ablation_sensitivity` (1: one at a time).
VARIANTS_PER_PASS = 8
#: The ablated copies of one vmapped pass hold at most max(model size, this) elements.
VARIANT_ELEMENTS_FLOOR = 1 << 22
#: Elements per float64 chunk when summing, so a summary of n values needs O(chunk) extra memory.
CHUNK = 1 << 22


def population_mean_std(values: torch.Tensor) -> Tuple[float, float]:
    """Mean and population standard deviation sqrt(Σ(x − mean)² / n) of a 1-D tensor, summed in
    float64 in chunks (two passes), so 10⁸ float32 values cost O(:data:`CHUNK`) extra memory."""
    total = sum(chunk.double().sum().item() for chunk in values.split(CHUNK))
    mean = total / values.numel()
    squares = sum((chunk.double() - mean).square().sum().item() for chunk in values.split(CHUNK))
    return mean, math.sqrt(squares / values.numel())


def _common(labels: Sequence[str]) -> Optional[str]:
    """The label every member shares, None when they differ."""
    return labels[0] if len(set(labels)) == 1 else None


@dataclass
class ParameterSensitivity:
    """Per-parameter sensitivities of one model.

    ``values``: parameter name -> sensitivities, same shape as the parameter, float32 on the CPU,
    in ``named_parameters`` order (parameters that require grad only); ``batch_losses``: L_b of
    every batch; ``normalize``: None or "loss" (see :func:`taylor_sensitivity`).
    """

    values: Dict[str, torch.Tensor]
    batch_losses: List[float]
    method: str
    normalize: Optional[str]
    num_batches: int

    def flat(self) -> torch.Tensor:
        """All sensitivities as one 1-D tensor, in ``named_parameters`` order."""
        return torch.cat([value.reshape(-1) for value in self.values.values()])

    def table(self, granularity: str = "tensor") -> pd.DataFrame:
        """One row per group (see :func:`intradist.analysis.grouping.group_of`): group, layer, module_type
        (missing where the members differ), num_params, sum, mean, std (population), min, max, median.

        At "parameter" granularity a large model must not give a row per scalar: one row per tensor
        summarises its parameters' distribution instead (num_params, mean, std, min, the
        :data:`QUANTILES` q01 q10 q50 q90 q99, max).
        """
        if granularity not in GRANULARITIES:
            raise UserError(f"unknown granularity {granularity!r}; choose one of {', '.join(GRANULARITIES)}")
        groups: Dict[str, List[str]] = {}
        for name in self.values:
            groups.setdefault(group_of(name, granularity), []).append(name)
        rows = []
        for group, names in groups.items():
            values = torch.cat([self.values[name].reshape(-1) for name in names])
            mean, std = population_mean_std(values)
            row: Dict[str, Any] = {
                "group": group,
                "layer": _common([layer_of(name) for name in names]),
                "module_type": _common([module_type_of(name) for name in names]),
                "num_params": values.numel(),
            }
            if granularity == "parameter":
                quantiles = np.quantile(values.numpy(), QUANTILES)
                row.update(mean=mean, std=std, min=values.min().item())
                row.update({f"q{round(q * 100):02d}": float(x) for q, x in zip(QUANTILES, quantiles)})
                row.update(max=values.max().item())
            else:
                total = sum(chunk.double().sum().item() for chunk in values.split(CHUNK))
                row.update(sum=total, mean=mean, std=std, min=values.min().item(), max=values.max().item(),
                           median=float(np.median(values.numpy())))  # fmt: skip
            rows.append(row)
        return pd.DataFrame(rows)


def _check_normalize(normalize: Optional[str]) -> None:
    if normalize not in NORMALIZATIONS:
        raise UserError(f"unknown normalize {normalize!r}; choose None or 'loss'")


def _checked(loss: Any, index: int, normalize: Optional[str]) -> float:
    """The batch loss as a float, after checking it is a finite scalar (and non-zero to divide by)."""
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        shape = tuple(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise UserError(f"loss_fn must return a scalar tensor; batch {index} gave {shape}")
    value = loss.item()
    if not math.isfinite(value):
        raise UserError(f"the loss of batch {index} is {value}; sensitivity needs a finite loss")
    if normalize == "loss" and value == 0:
        raise UserError(f"the loss of batch {index} is 0; normalize='loss' divides by each batch's loss")
    return value


def _analysed(model: nn.Module) -> Dict[str, nn.Parameter]:
    """The parameters that require grad, by name, in ``named_parameters`` order."""
    parameters = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if not parameters:
        raise UserError("the model has no parameters that require grad: nothing to compute sensitivity for")
    return parameters


def taylor_sensitivity(
    model: nn.Module, batches: Iterable[Any], loss_fn: LossFn, normalize: Optional[str] = None, progress: bool = True
) -> ParameterSensitivity:
    """First-order sensitivity of every parameter, s_j = |θ_j · ∂L̄/∂θ_j| (Xu et al., 2022).

    L̄ = (1/B) Σ_b L_b, with L_b = ``loss_fn(model, batch_b)`` computed in eval mode (dropout
    off). s_j estimates |L̄(Θ) − L̄(Θ with θ_j = 0)| to first order; it is exact when L̄ is
    linear in θ_j.

    ``normalize="loss"`` is the reproduction study's loss-normalised variant: each batch's term is
    divided by that batch's loss, s_j = |θ_j · (1/B) Σ_b (∂L_b/∂θ_j) / L_b| (the backward of
    L_b / L_b.detach()). It is scale-free: multiplying the loss by a constant leaves it unchanged,
    so models with different loss levels can be compared.

    Streaming: one forward and one backward per batch; the gradients accumulate in the
    parameters' ``.grad`` and are divided by B at the end, then turned into s_j in place (for a
    float32 model on the CPU the gradient buffers become the values). Extra memory: the gradient
    buffers plus the values, at most 2x the parameter size.
    Any pre-existing ``.grad`` and the model's train/eval mode are restored. Only parameters that
    require grad get a sensitivity.
    """
    _check_normalize(normalize)
    parameters = _analysed(model)
    saved_grads = {name: p.grad for name, p in parameters.items()}
    was_training = model.training
    losses: List[float] = []
    try:
        for p in parameters.values():
            p.grad = None
        model.eval()
        total = len(batches) if hasattr(batches, "__len__") else None
        for index, batch in enumerate(tqdm(batches, total=total, desc="taylor", disable=not progress)):
            loss = loss_fn(model, batch)
            losses.append(_checked(loss, index, normalize))
            if not loss.requires_grad:
                raise UserError(f"the loss of batch {index} does not depend on the parameters; "
                                "loss_fn must not run under torch.no_grad")  # fmt: skip
            (loss / loss.detach() if normalize == "loss" else loss).reshape(()).backward()
        if not losses:
            raise UserError("no batches to compute sensitivity on")
        values = {}
        for name, p in parameters.items():
            if p.grad is None:  # unused by the loss: zero sensitivity
                values[name] = torch.zeros(p.shape, dtype=torch.float32)
            else:
                grad = p.grad.float()
                values[name] = grad.mul_(p.detach()).abs_().div_(len(losses)).cpu()
            p.grad = None
    finally:
        for name, p in parameters.items():
            p.grad = saved_grads[name]
        model.train(was_training)
    return ParameterSensitivity(values, losses, "taylor", normalize, len(losses))


#: A group to ablate: its name and the parameter slices that zeroing it sets to 0.
Group = Tuple[str, List[ParameterSlice]]


def _ablation_groups(model: nn.Module, parameters: Dict[str, nn.Parameter], granularity: str) -> List[Group]:
    """The groups to ablate at ``granularity``, in ``named_parameters`` order."""
    if granularity == "head":
        heads = {name: [(tensor, index) for tensor, index in slices if tensor in parameters]
                 for name, slices in attention_head_groups(model).items()}  # fmt: skip
        groups = [(name, slices) for name, slices in heads.items() if slices]  # frozen heads are not analysed
        if not groups:
            raise UserError("granularity 'head' found no attention modules (fairseq MultiheadAttention, "
                            "BERT-style self-attention or torch.nn.MultiheadAttention) in the model")  # fmt: skip
        return groups
    if granularity == "parameter":
        count = sum(p.numel() for p in parameters.values())
        if count > MAX_PARAMETER_ABLATIONS:
            raise UserError(f"ablation at granularity 'parameter' runs one loss per parameter; the model has {count:,} "
                            f"(limit {MAX_PARAMETER_ABLATIONS:,}): use a coarser granularity or method='taylor'")  # fmt: skip
        groups = []
        for name, p in parameters.items():
            for flat in range(p.numel()):
                index = tuple(int(i) for i in np.unravel_index(flat, tuple(p.shape)))
                label = f"{name}[{','.join(map(str, index))}]" if index else name
                groups.append((label, [(name, index)]))
        return groups
    by_name: Dict[str, List[ParameterSlice]] = {}
    for name in parameters:
        by_name.setdefault(group_of(name, granularity), []).append((name, (Ellipsis,)))
    return list(by_name.items())


def _batch_losses(model: nn.Module, batches: Sequence[Any], loss_fn: LossFn) -> torch.Tensor:
    """L_b for every batch, float64 on the CPU (one host transfer)."""
    return torch.stack([loss_fn(model, batch).detach().reshape(()).double() for batch in batches]).cpu()


def _ablated_losses_loop(model: nn.Module, group: Group, batches: Sequence[Any], loss_fn: LossFn) -> torch.Tensor:
    """L_b with the group zeroed in place; the saved slices are copied back afterwards, exactly."""
    saved = [(p, index, p[index].clone()) for p, index in ((model.get_parameter(t), i) for t, i in group[1])]
    try:
        for p, index, _ in saved:
            p[index] = 0
        return _batch_losses(model, batches, loss_fn)
    finally:
        for p, index, value in saved:
            p[index] = value


class _LossOf(nn.Module):
    """``loss_fn(model, batch)`` as a module, so torch.func.functional_call can swap its parameters."""

    def __init__(self, model: nn.Module, loss_fn: LossFn) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Any) -> torch.Tensor:
        return self.loss_fn(self.model, batch).reshape(())


def _ablated_losses_vmap(model: nn.Module, groups: Sequence[Group], batches: Sequence[Any], loss_fn: LossFn) -> torch.Tensor:
    """L_b of each group's ablated model, [batches, groups], from one vmapped forward per batch.

    Variant g replaces the tensors the chunk touches by copies with group g's slices zeroed; all
    other parameters (and every computation before the first touched one) are shared. Raises
    RuntimeError where the model cannot run under vmap (``.item()``, data-dependent control flow,
    an operator without a batching rule: torch's per-variant fallback is switched off here).
    """
    touched = list(dict.fromkeys(tensor for _, slices in groups for tensor, _ in slices))
    originals = {name: model.get_parameter(name).detach() for name in touched}
    variants = {name: value.expand(len(groups), *value.shape).clone() for name, value in originals.items()}
    for g, (_, slices) in enumerate(groups):
        for tensor, index in slices:
            variants[tensor][g][index] = 0
    wrapped = _LossOf(model, loss_fn)
    evaluate = vmap(lambda params, batch: functional_call(wrapped, params, (batch,)), in_dims=(0, None))
    params = {f"model.{name}": value for name, value in variants.items()}
    # functional_call can leave a tied parameter (fairseq's shared embeddings) as a plain tensor
    # when the vmapped forward raises: remember every registered parameter and put it back.
    owners = [(module, attr, param) for module in model.modules() for attr, param in module._parameters.items()
              if param is not None]  # fmt: skip
    fallback = torch._C._functorch._is_vmap_fallback_enabled()
    torch._C._functorch._set_vmap_fallback_enabled(False)
    try:
        return torch.stack([evaluate(params, batch).double() for batch in batches]).cpu()
    finally:
        torch._C._functorch._set_vmap_fallback_enabled(fallback)
        for module, attr, param in owners:
            if module._parameters.get(attr) is not param:
                module.__dict__.pop(attr, None)
                module._parameters[attr] = param


def _chunks(groups: Sequence[Group], parameters: Dict[str, nn.Parameter], size: int, budget: int) -> List[List[Group]]:
    """Consecutive groups, at most ``size`` per chunk and at most ``budget`` elements in the
    variants a chunk needs (its number of groups x the elements of the tensors it touches)."""
    chunks: List[List[Group]] = [[]]
    touched: Set[str] = set()
    for group in groups:
        tensors = {tensor for tensor, _ in group[1]}
        grown = touched | tensors
        cost = (len(chunks[-1]) + 1) * sum(parameters[tensor].numel() for tensor in grown)
        if chunks[-1] and (len(chunks[-1]) == size or cost > budget):
            chunks.append([])
            grown = tensors
        chunks[-1].append(group)
        touched = grown
    return [chunk for chunk in chunks if chunk]


def ablation_sensitivity(
    model: nn.Module,
    batches: Iterable[Any],
    loss_fn: LossFn,
    granularity: str = "tensor",
    normalize: Optional[str] = None,
    progress: bool = True,
    variants_per_pass: int = VARIANTS_PER_PASS,
) -> pd.DataFrame:
    """Exact sensitivity of groups of parameters: |L̄(Θ) − L̄(Θ with the group zeroed)|.

    L̄ = (1/B) Σ_b L_b, L_b = ``loss_fn(model, batch_b)`` in eval mode. Groups at
    ``granularity`` (:data:`ABLATION_GRANULARITIES`): each scalar ("parameter", refused above
    :data:`MAX_PARAMETER_ABLATIONS`), tensor, module, layer, module_type, or attention "head".
    Columns: group, num_params, loss (the ablated L̄), delta (ablated L̄ − L̄), sensitivity
    (|delta|). With ``normalize="loss"``, sensitivity = |(1/B) Σ_b (L_b(ablated) − L_b) / L_b|:
    each batch's change divided by that batch's loss, the exact quantity that
    :func:`taylor_sensitivity` estimates with the same ``normalize`` (both agree when the loss is
    linear in the group).

    The batches are materialised once. Groups are zeroed in place under ``torch.no_grad`` and
    copied back exactly (never a copy of the model). Up to ``variants_per_pass`` consecutive
    groups are evaluated in one forward per batch with torch.func.vmap over ablated copies of the
    tensors they touch (those copies limited to the model's size, or :data:`VARIANT_ELEMENTS_FLOOR`
    elements for a small model); where the model cannot run
    under vmap, the groups are evaluated one by one. ``torch.no_grad`` rather than
    ``inference_mode``: modules that cache tensors made in the forward (fairseq's sinusoidal
    positions) would otherwise break a later backward.
    """
    if granularity not in ABLATION_GRANULARITIES:
        raise UserError(f"unknown granularity {granularity!r}; choose one of {', '.join(ABLATION_GRANULARITIES)}")
    _check_normalize(normalize)
    parameters = _analysed(model)
    groups = _ablation_groups(model, parameters, granularity)
    batches = list(batches)
    if not batches:
        raise UserError("no batches to compute sensitivity on")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            base = [_checked(loss_fn(model, batch), index, normalize) for index, batch in enumerate(batches)]
            budget = max(sum(p.numel() for p in parameters.values()), VARIANT_ELEMENTS_FLOOR)
            use_vmap = variants_per_pass > 1
            columns = []
            with tqdm(total=len(groups), desc=f"ablation ({granularity})", disable=not progress) as bar:
                for chunk in _chunks(groups, parameters, variants_per_pass, budget):
                    losses = None
                    if use_vmap and len(chunk) > 1:
                        try:
                            losses = _ablated_losses_vmap(model, chunk, batches, loss_fn)
                        except Exception:  # the model does not run under vmap (any error); a real error recurs below
                            use_vmap = False
                    if losses is None:
                        losses = torch.stack([_ablated_losses_loop(model, g, batches, loss_fn) for g in chunk], dim=1)
                    columns.append(losses)
                    bar.update(len(chunk))
    finally:
        model.train(was_training)
    ablated = torch.cat(columns, dim=1)  # [batches, groups]
    base_losses = torch.tensor(base, dtype=torch.float64)[:, None]
    loss = ablated.mean(0)
    delta = loss - base_losses.mean()
    if normalize == "loss":
        value = ((ablated - base_losses) / base_losses).mean(0).abs()
    else:
        value = delta.abs()
    sizes = [sum(parameters[t][i].numel() for t, i in slices) for _, slices in groups]
    return pd.DataFrame({"group": [name for name, _ in groups], "num_params": sizes,
                         "loss": loss.numpy(), "delta": delta.numpy(), "sensitivity": value.numpy()})  # fmt: skip


def sensitivity(
    model: nn.Module,
    batches: Iterable[Any],
    loss_fn: LossFn,
    method: str = "taylor",
    granularity: str = "tensor",
    normalize: Optional[str] = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Sensitivity of ``model``'s parameters as a DataFrame (the issue's one-call API).

    ``method="taylor"``: :func:`taylor_sensitivity` summarised by
    :meth:`ParameterSensitivity.table` at ``granularity``; ``method="ablation"``:
    :func:`ablation_sensitivity` (exact, one loss evaluation per group).
    """
    if method not in METHODS:
        raise UserError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if method == "ablation":
        return ablation_sensitivity(model, batches, loss_fn, granularity, normalize, progress)
    if granularity not in GRANULARITIES:
        hint = " ('head' needs method='ablation')" if granularity == "head" else ""
        choices = ", ".join(GRANULARITIES)
        raise UserError(f"unknown granularity {granularity!r} for method 'taylor'; choose one of {choices}{hint}")
    return taylor_sensitivity(model, batches, loss_fn, normalize, progress).table(granularity)

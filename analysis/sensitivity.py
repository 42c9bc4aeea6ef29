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

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.func import functional_call, vmap
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_leaves, tree_map
from tqdm.auto import tqdm

from intradist.analysis.grouping import GRANULARITIES, ParameterSlice, attention_head_groups, group_of, layer_of, module_type_of
from intradist.balance_statistics import CHUNK, population_mean_std
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


@contextlib.contextmanager
def _zeroed(model: nn.Module, group: Group) -> Iterator[None]:
    """The group's slices set to 0 in place; the saved slices are copied back afterwards, exactly."""
    saved = [(p, index, p[index].clone()) for p, index in ((model.get_parameter(t), i) for t, i in group[1])]
    try:
        for p, index, _ in saved:
            p[index] = 0
        yield
    finally:
        for p, index, value in saved:
            p[index] = value


def _ablated_losses_loop(model: nn.Module, group: Group, batches: Sequence[Any], loss_fn: LossFn) -> torch.Tensor:
    """L_b with the group zeroed in place."""
    with _zeroed(model, group):
        return _batch_losses(model, batches, loss_fn)


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


# Reusing the activations below the ablated group.
#
# One forward of ``loss_fn`` is recorded under a torch-function mode: every module call (in the
# order calls start), a clock that ticks at each call's start and end and at each torch operation,
# and the tick at which each parameter is first read. A call that returned before any tensor of a
# group was first read cannot depend on that group: with the group zeroed, its output is the one
# the unablated forward gave. So for each batch the outputs of such calls are captured once, from
# the unablated forward, and each group's forward skips them (the module returns its captured
# output) and computes only what comes after: for a group in block k of a stack of blocks, the
# blocks k..n-1 and the head, from block k's cached input; for an encoder layer of an
# encoder-decoder, the rest of the encoder and the whole decoder (its calls come after the first
# read); for a decoder layer, the decoder from that layer on, with the cached encoder output.

#: Accessors that read a tensor's metadata, not its values: a parameter passed to them is not read.
_METADATA = frozenset({"size", "dim", "ndim", "ndimension", "numel", "nelement", "shape", "dtype", "device", "layout",
                       "is_cuda", "is_sparse", "is_quantized", "is_meta", "is_floating_point", "is_complex",
                       "element_size", "itemsize", "nbytes", "stride", "is_contiguous", "get_device", "requires_grad",
                       "is_leaf", "grad_fn", "names", "_version"})  # fmt: skip
#: Leaves besides tensors that a replayed output may hold (anything else: the call is run, not replayed).
_PLAIN_LEAVES = (type(None), bool, int, float, str, torch.dtype, torch.device)


class _Diverged(Exception):
    """A forward made other module calls than the recorded one (its control flow changed)."""


class _CacheChanged(Exception):
    """A forward changed a kept output in place where the recorded one did not: the cache is spoilt."""


@dataclass
class _Call:
    """One module call of the recorded forward."""

    module: nn.Module
    start: int  # the clock when it was called
    end: int = -1  # the clock when it returned
    after: int = -1  # the index of the first call after it and every call it made
    replayable: bool = False  # its captured output can stand in for running it
    copied: bool = False  # the forward changes its output in place later: kept and handed out as copies


class _ReadClock(TorchFunctionMode):
    """Ticks the recorder's clock at every torch operation and notes each parameter's first read."""

    def __init__(self, calls: "_ModuleCalls") -> None:
        super().__init__()
        self.calls = calls

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        calls = self.calls
        name = getattr(func, "__name__", "")
        if name == "__get__":  # a property: its name is the descriptor's
            name = getattr(getattr(func, "__self__", None), "__name__", name)
        if not calls.paused and name not in _METADATA:
            calls.clock += 1
            for leaf in tree_leaves((args, kwargs)):
                parameter = calls.parameter_names.get(id(leaf))
                if parameter is not None:
                    calls.first_read.setdefault(parameter, calls.clock)
        return func(*args, **kwargs)


class _PassThrough(TorchFunctionMode):
    """Any torch-function mode takes the same code paths as :class:`_ReadClock` (torch's fused
    transformer layers run their fast path only where no mode is active); this one changes nothing."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        return func(*args, **(kwargs or {}))


def _tensors(tree: Any) -> List[torch.Tensor]:
    return [leaf for leaf in tree_leaves(tree) if isinstance(leaf, torch.Tensor)]


def _handed(output: Any, copied: bool) -> Any:
    """``output`` in new containers, its tensors cloned when ``copied``."""
    return tree_map(lambda leaf: leaf.clone() if copied and isinstance(leaf, torch.Tensor) else leaf, output)


class _ModuleCalls:
    """Records, captures and replays the module calls of ``loss_fn(model, batch)``.

    While entered, every submodule's ``forward`` is wrapped (an instance attribute, removed on
    exit); outside :meth:`record`, :meth:`capture` and :meth:`replay` the wrappers only pass the
    call through. Capture and replay check that the forward makes the recorded calls in the
    recorded order, and raise :class:`_Diverged` where it does not. The capture keeps the
    forward's own output tensors (copies only of those it changes in place afterwards), so the
    cache of a batch costs about what a backward pass would keep of it.
    """

    def __init__(self, model: nn.Module, parameters: Dict[str, nn.Parameter]) -> None:
        self.model = model
        self.parameter_names = {id(p): name for name, p in parameters.items()}
        self.parameter_storages = {p.untyped_storage().data_ptr() for p in model.parameters()} - {0}
        self.calls: List[_Call] = []
        self.first_read: Dict[str, int] = {}
        self.clock = self.next = 0
        self.mode = "off"
        self.paused = self.diverged = False
        self.uniform = False  # capture and replay under _PassThrough, where the model's path depends on a mode
        self.keep: Set[int] = set()
        self.replay_at: Set[int] = set()
        self.cache: Dict[int, Any] = {}
        self.returned: List[Tuple[_Call, List[Tuple[torch.Tensor, int]]]] = []  # kept tensors and their versions
        self._wrapped: List[Tuple[nn.Module, Any]] = []

    def __enter__(self) -> "_ModuleCalls":
        try:
            for module in dict.fromkeys(self.model.modules()):
                if isinstance(module, torch.jit.ScriptModule):  # its reads are invisible to the read clock
                    raise TypeError(f"{type(module).__name__} is scripted")
                own = module.__dict__.get("forward")
                module.forward = _Forward(self, module, module.forward)
                self._wrapped.append((module, own))
        except Exception:  # a scripted module, or one whose forward cannot be replaced
            self.__exit__()
            raise _Diverged("a module's forward cannot be wrapped") from None
        return self

    def __exit__(self, *exc: Any) -> None:
        for module, own in reversed(self._wrapped):
            if own is None:
                module.__dict__.pop("forward", None)
            else:
                module.__dict__["forward"] = own
        self._wrapped = []
        self.cache, self.returned = {}, []

    def plan(self, loss_fn: LossFn, batch: Any, groups: Sequence[Group]) -> Tuple[List[List[int]], Set[int], torch.Tensor]:
        """Record the calls on ``batch``, then capture it: the calls each group replays, the calls whose
        outputs are kept, and the batch's loss. Where the capture makes other calls than the record
        (a path chosen by the absence of a mode), both are redone with capture and replay under
        :class:`_PassThrough`; raises :class:`_Diverged` where they still differ."""
        for uniform in dict.fromkeys((self.uniform, True)):
            self.uniform = uniform
            self.record(loss_fn, batch)
            plan = [self.replayed(dict.fromkeys(tensor for tensor, _ in slices)) for _, slices in groups]
            keep = set().union(*plan)
            try:
                return plan, keep, self.capture(loss_fn, batch, keep)
            except _Diverged:
                if uniform:
                    raise
        raise AssertionError("unreachable")

    def record(self, loss_fn: LossFn, batch: Any) -> None:
        """Run ``loss_fn`` under the read clock: the calls, their clocks, each parameter's first read,
        and which outputs the forward changes in place after they were returned."""
        self.calls, self.first_read, self.clock, self.returned = [], {}, 0, []
        self.mode = "record"
        try:
            with _ReadClock(self):
                loss_fn(self.model, batch)
        finally:
            self.mode = "off"
        for call, versions in self.returned:
            call.copied = any(tensor._version != version for tensor, version in versions)
        self.returned = []

    def replayed(self, tensors: Iterable[str]) -> List[int]:
        """The calls to replay when ``tensors`` are ablated: the outermost of those that returned before
        any of them was first read (none when no read was seen: code the clock cannot see, such as a
        C++ extension, may read them)."""
        first = min((self.first_read.get(name, math.inf) for name in tensors), default=math.inf)
        if first == math.inf:
            return []
        chosen, index = [], 0
        while index < len(self.calls):
            call = self.calls[index]
            if call.replayable and call.end < first:
                chosen.append(index)
                index = call.after
            else:
                index += 1
        return chosen

    def capture(self, loss_fn: LossFn, batch: Any, keep: Set[int]) -> torch.Tensor:
        """``loss_fn`` with the model as it is, keeping the outputs of the calls in ``keep``."""
        self.keep, self.cache, self.returned = keep, {}, []
        return self._run("capture", loss_fn, batch)

    def replay(self, loss_fn: LossFn, batch: Any, calls: Iterable[int]) -> torch.Tensor:
        """``loss_fn`` with the given calls answered from the capture instead of run."""
        self.replay_at = set(calls)
        return self._run("replay", loss_fn, batch)

    def _run(self, mode: str, loss_fn: LossFn, batch: Any) -> torch.Tensor:
        self.mode, self.next, self.diverged = mode, 0, False
        try:
            with _PassThrough() if self.uniform else contextlib.nullcontext():
                loss = loss_fn(self.model, batch)
        finally:
            self.mode = "off"
            if any(tensor._version != version for _, versions in self.returned for tensor, version in versions):
                raise _CacheChanged("the forward changed a kept output in place")  # also when it raised: worse
        if self.diverged or self.next != len(self.calls):  # also where the model code swallowed _Diverged
            raise _Diverged("the forward made other module calls than the recorded one")
        return loss

    def _diverge(self) -> _Diverged:
        self.diverged = True
        return _Diverged("the forward made other module calls than the recorded one")

    def call(self, module: nn.Module, forward: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        if self.mode == "off":
            return forward(*args, **kwargs)
        if self.mode == "record":
            return self._record(module, forward, args, kwargs)
        index = self.next
        if index >= len(self.calls) or self.calls[index].module is not module:
            raise self._diverge()
        call = self.calls[index]
        if self.mode == "replay" and index in self.replay_at:
            self.next = call.after
            return _handed(self.cache[index], call.copied)
        self.next = index + 1
        output = forward(*args, **kwargs)
        if self.next != call.after:
            raise self._diverge()
        if self.mode == "capture" and index in self.keep:
            self.cache[index] = _handed(output, call.copied)
            if not call.copied:
                self.returned.append((call, [(tensor, tensor._version) for tensor in _tensors(output)]))
        return output

    def _record(self, module: nn.Module, forward: Callable[..., Any], args: tuple, kwargs: dict) -> Any:
        self.clock += 1
        call = _Call(module, self.clock)
        self.calls.append(call)
        self.paused = True
        inputs = [(tensor, tensor._version) for tensor in _tensors((args, kwargs))]
        self.paused = False
        output = forward(*args, **kwargs)
        self.paused = True
        try:  # replayable: it changed none of its inputs in place, and returns plain data, no parameter itself
            leaves = tree_leaves(output)
            call.replayable = all(tensor._version == version for tensor, version in inputs) and all(
                isinstance(leaf, _PLAIN_LEAVES)
                or (isinstance(leaf, torch.Tensor) and leaf.untyped_storage().data_ptr() not in self.parameter_storages)
                for leaf in leaves
            )
            self.returned.append((call, [(tensor, tensor._version) for tensor in _tensors(leaves)]))
        finally:
            self.paused = False
        self.clock += 1
        call.end, call.after = self.clock, len(self.calls)
        return output


class _Forward:
    """A module's forward, called through :meth:`_ModuleCalls.call`."""

    def __init__(self, calls: _ModuleCalls, module: nn.Module, forward: Callable[..., Any]) -> None:
        self.calls, self.module, self.forward = calls, module, forward

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.calls.call(self.module, self.forward, args, kwargs)


def _ablated_losses_cached(
    model: nn.Module, groups: Sequence[Group], batches: Sequence[Any], loss_fn: LossFn, normalize: Optional[str],
    parameters: Dict[str, nn.Parameter], bar: Any,
) -> Optional[Tuple[List[float], torch.Tensor]]:  # fmt: skip
    """The base losses L_b and the ablated ones, [batches, groups], reusing the activations below each
    group (see the comment above :data:`_METADATA`); None where the model does not allow it.

    Per batch, one unablated forward captures the outputs that some group can reuse (about the
    activations a backward would keep, for one batch); each group then runs only the calls from its
    first read on. The calls are recorded on the first batch, and again on a batch whose forward
    makes other calls. A group whose forward makes other calls than the recorded ones is run
    without replay. Checked once: the group that replays most is also run in full on the first
    batch, and both losses must agree to 1e-6 relative.
    """
    base: List[float] = []
    rows: List[torch.Tensor] = []
    bar.reset(total=len(groups) * len(batches))
    try:
        with _ModuleCalls(model, parameters) as calls:
            plan: Optional[List[List[int]]] = None
            keep: Set[int] = set()
            for index, batch in enumerate(batches):
                loss = None
                if plan is not None:
                    try:
                        loss = calls.capture(loss_fn, batch, keep)
                    except (_Diverged, _CacheChanged):  # this batch runs otherwise: record it
                        plan = None
                if plan is None:
                    plan, keep, loss = calls.plan(loss_fn, batch, groups)
                base.append(_checked(loss, index, normalize))
                losses = []
                for group, replayed in zip(groups, plan):
                    with _zeroed(model, group):
                        try:
                            losses.append(calls.replay(loss_fn, batch, replayed).detach().reshape(()).double())
                        except _Diverged:
                            losses.append(loss_fn(model, batch).detach().reshape(()).double())
                if index == 0:
                    most = max(range(len(groups)), key=lambda g: sum(calls.calls[c].after - c for c in plan[g]))
                    with _zeroed(model, groups[most]):
                        full = loss_fn(model, batch).detach().reshape(()).double()
                    if not math.isclose(full.item(), losses[most].item(), rel_tol=1e-6, abs_tol=1e-12):
                        return None
                rows.append(torch.stack(losses))
                bar.update(len(groups))
    except (_Diverged, _CacheChanged):
        return None
    except UserError:
        raise
    except Exception:  # the recording mode or the wrappers broke the model's forward: not this path
        return None
    return base, torch.stack(rows).cpu()


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
    reuse_activations: bool = True,
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
    copied back exactly (never a copy of the model). With ``reuse_activations`` (default), each
    batch's unablated forward is run once and each group recomputes only what comes after the
    first read of its parameters, from the cached outputs of the modules before it (for a group in
    block k of a transformer: blocks k..n-1 and the head; see :func:`_ablated_losses_cached`).
    Where the model does not allow that (its forward cannot be wrapped, or makes other module calls
    from batch to batch than recorded), the groups are evaluated with the whole forward: up to
    ``variants_per_pass`` consecutive groups in one forward per batch with torch.func.vmap over
    ablated copies of the tensors they touch (those copies limited to the model's size, or
    :data:`VARIANT_ELEMENTS_FLOOR` elements for a small model), or one by one where the model
    cannot run under vmap. ``table.attrs["evaluation"]`` says which: "reused activations",
    "vmapped" or "one by one". ``torch.no_grad`` rather than ``inference_mode``: modules that
    cache tensors made in the forward (fairseq's sinusoidal positions) would otherwise break a
    later backward.
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
        with torch.no_grad(), tqdm(total=len(groups), desc=f"ablation ({granularity})", disable=not progress) as bar:
            cached = _ablated_losses_cached(model, groups, batches, loss_fn, normalize, parameters, bar) if reuse_activations else None
            if cached is not None:
                base, ablated = cached
                evaluation = "reused activations"
            else:
                bar.reset(total=len(groups))
                base = [_checked(loss_fn(model, batch), index, normalize) for index, batch in enumerate(batches)]
                ablated, evaluation = _ablated_losses_full(model, groups, batches, loss_fn, parameters, variants_per_pass, bar)
    finally:
        model.train(was_training)
    base_losses = torch.tensor(base, dtype=torch.float64)[:, None]
    loss = ablated.mean(0)
    delta = loss - base_losses.mean()
    if normalize == "loss":
        value = ((ablated - base_losses) / base_losses).mean(0).abs()
    else:
        value = delta.abs()
    sizes = [sum(parameters[t][i].numel() for t, i in slices) for _, slices in groups]
    table = pd.DataFrame({"group": [name for name, _ in groups], "num_params": sizes,
                          "loss": loss.numpy(), "delta": delta.numpy(), "sensitivity": value.numpy()})  # fmt: skip
    table.attrs["evaluation"] = evaluation
    return table


def _ablated_losses_full(
    model: nn.Module, groups: Sequence[Group], batches: Sequence[Any], loss_fn: LossFn,
    parameters: Dict[str, nn.Parameter], variants_per_pass: int, bar: Any,
) -> Tuple[torch.Tensor, str]:  # fmt: skip
    """The ablated losses [batches, groups], each from the whole forward: vmapped chunks of up to
    ``variants_per_pass`` groups, or one group at a time; and which of the two ran."""
    budget = max(sum(p.numel() for p in parameters.values()), VARIANT_ELEMENTS_FLOOR)
    use_vmap = variants_per_pass > 1
    columns = []
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
    return torch.cat(columns, dim=1), "vmapped" if use_vmap else "one by one"


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

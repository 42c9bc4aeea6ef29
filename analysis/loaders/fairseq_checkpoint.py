"""fairseq checkpoints: rebuilt from their stored config with the dictionaries of a data directory.

fairseq (and the project's plugin, ``user_dir``) is imported only inside :func:`load_fairseq`, when
a fairseq checkpoint is loaded; importing this module loads no fairseq.
"""

from __future__ import annotations

import functools
import importlib
import sys
import warnings
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from intradist.analysis.loaders.model import LoadedModel, parameter_count, seeded
from intradist.analysis.loaders.safe_reading import first_line
from intradist import fairseq_dictionaries
from intradist.errors import UserError
from intradist.paths import fairseq_plugin_folder
from intradist.provenance import sha256_of


def is_fairseq_checkpoint(content: Any) -> bool:
    return (
        isinstance(content, Mapping)
        and "model" in content
        and (content.get("cfg") is not None or content.get("args") is not None)
    )


def _prepare_fairseq_state(state: Dict[str, Any], overrides: Dict[str, Any]) -> Dict[str, Any]:
    """What fairseq's ``load_checkpoint_to_cpu`` does after unpickling (we unpickle ourselves, weights-only)."""
    from fairseq import checkpoint_utils
    from fairseq.dataclass.utils import overwrite_args_by_name

    if state.get("args") is not None:
        for name, value in overrides.items():
            setattr(state["args"], name, value)
    if state.get("cfg") is not None:
        state["cfg"] = OmegaConf.create(state["cfg"], flags={"allow_objects": True})
        overwrite_args_by_name(state["cfg"], overrides)
    return checkpoint_utils._upgrade_state_dict(state)


def register_fairseq_plugin() -> None:
    """Import the project's plugin (and with it fairseq, quietly) so that its task and criterions are registered.

    It is imported as fairseq's ``--user-dir`` importer does, as the top-level module named by its
    folder (``user_dir``) with the folder's parent on ``sys.path`` for the import, so a checkpoint
    recording that folder as ``common.user_dir`` finds it already imported. fairseq's own importer
    is not called for it: it imports fairseq first, with its import-time noise.
    """
    folder = fairseq_plugin_folder()
    if folder.name in sys.modules:
        return
    sys.path.insert(0, str(folder.parent))
    try:
        importlib.import_module(folder.name)
    finally:
        sys.path.remove(str(folder.parent))


def load_fairseq(path: Path, state: Dict[str, Any], data: Optional[Union[str, Path]], seed: int) -> LoadedModel:
    """Rebuild a fairseq model from its stored config, with the task (and dictionaries) of the data directory.

    fairseq is imported here, when a fairseq checkpoint is loaded, with the project's plugin
    (``user_dir``: checkpoints of its task and criterions rebuild too).
    """
    register_fairseq_plugin()
    from fairseq import checkpoint_utils, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    recorded = fairseq_dictionaries.recorded_data(state)
    if data is None:
        if recorded is None or not Path(recorded).is_dir():
            raise UserError(
                f"{path}: the data directory recorded in the checkpoint ({recorded or 'none'}) is missing; "
                f"pass --data DIR (the fairseq data-bin with its dictionaries)"
            )
        data_dir = Path(recorded)
    else:
        data_dir = Path(data)
        if not data_dir.is_dir():
            raise UserError(f"--data {data_dir}: no such directory (a fairseq data-bin with its dictionaries)")
    trained_with = fairseq_dictionaries.checkpoint_symbols(state)
    difference = trained_with and fairseq_dictionaries.mismatch(trained_with, fairseq_dictionaries.data_symbols(data_dir, state))
    if difference:
        raise UserError(f"--data {data_dir}: its dictionaries are not those {path} was trained with ({difference})")
    overrides = {"data": str(data_dir)}
    state = _prepare_fairseq_state(state, overrides)
    cfg = convert_namespace_to_omegaconf(state["args"]) if state.get("args") is not None else state["cfg"]
    task_name = cfg.task._name
    if task_name not in tasks.TASK_REGISTRY:
        raise UserError(
            f"{path}: task {task_name!r} is not registered in fairseq; the checkpoint needs a plugin (--user-dir) "
            f"that analysis does not load"
        )
    try:
        task = tasks.setup_task(cfg.task, from_checkpoint=True)
    except FileNotFoundError as error:
        raise UserError(f"{data_dir}: cannot set up the checkpoint's task {task_name} ({first_line(error)})") from None
    try:
        with seeded(seed):
            (model,), cfg, task = checkpoint_utils.load_model_ensemble_and_task(
                [str(path)], arg_overrides=overrides, task=task, state=state
            )
    except RuntimeError as error:  # load_state_dict: weights that do not fit the rebuilt model
        raise UserError(
            f"{path}: its weights do not fit the model rebuilt with the dictionaries of {data_dir} ({first_line(error)})"
        ) from None
    parts = [getattr(model, name, None) for name in ("encoder", "decoder")]
    layers = [str(len(part.layers)) for part in parts if hasattr(part, "layers")]
    arch = getattr(cfg.model, "arch", None) or getattr(cfg.model, "_name", None) or type(model).__name__
    description = (
        f"fairseq checkpoint: {arch}, task {task_name}, "
        + (f"{'+'.join(layers)} layers, " if layers else "")
        + f"{parameter_count(model)} (dictionaries from {data_dir})"
    )
    return LoadedModel(
        model=model,
        framework="fairseq",
        path=path,
        sha256=sha256_of(path),
        description=description,
        loss_fn=functools.partial(fairseq_token_nll, padding_idx=task.target_dictionary.pad()),
        extras={"task": task, "cfg": cfg, "data": data_dir},
    )


def fairseq_token_nll(model: torch.nn.Module, sample: Mapping[str, Any], padding_idx: int) -> torch.Tensor:
    """Mean negative log-likelihood (natural log) over the non-padding target tokens of a fairseq sample."""
    with warnings.catch_warnings():  # fairseq 0.12 hands torch's attention a bool padding mask and a float causal mask
        warnings.filterwarnings("ignore", message="Support for mismatched key_padding_mask", category=UserWarning)
        net_output = model(**sample["net_input"])
    lprobs = model.get_normalized_probs(net_output, log_probs=True)
    target = model.get_targets(sample, net_output)
    return F.nll_loss(lprobs.reshape(-1, lprobs.size(-1)), target.reshape(-1), ignore_index=padding_idx)

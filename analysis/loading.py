"""Load a trained model of any supported framework for analysis, without running code from the file.

``load_checkpoint`` detects what a path holds (a fairseq checkpoint, a Hugging Face model folder, a
torchvision or custom state dict), rebuilds the model on the requested device in eval mode, and
returns it with a loss function for one batch and what :mod:`analysis.batches` needs to make
batches the checkpoint's own way.

Safety: every pickle (``.pt``, ``.pth``, ``.bin``) is read with ``torch.load(weights_only=True)``
after :mod:`intradist.checkpoint_safety` allow-listed the plain-data types fairseq stores;
``.safetensors`` holds no code at all. A file whose unpickling needs any other global is refused
unless the caller passes ``trust_checkpoint=True``. Nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import importlib.util
import logging
import pickle
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple, Union

import safetensors.torch
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from intradist.checkpoint_safety import allow_plain_checkpoint_types
from intradist.errors import UserError
from intradist.provenance import sha256_of

FRAMEWORKS = ("fairseq", "transformers", "torchvision", "state_dict")

#: Weight files of a Hugging Face model folder, preferred first.
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")

#: Files that hold a tokenizer's vocabulary (a folder with none of them has no usable tokenizer).
HF_VOCABULARY_FILES = (
    "tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model", "tokenizer.model",
)  # fmt: skip

LossFn = Callable[[torch.nn.Module, Any], torch.Tensor]


@dataclass
class LoadedModel:
    """A model ready for forward passes, with how to compute its loss and make its batches."""

    model: torch.nn.Module  # on the requested device, eval mode
    framework: str  # one of FRAMEWORKS
    path: Path
    sha256: str  # of the checkpoint file (for a model folder: of its weights file)
    description: str  # one line: what was detected and built
    loss_fn: LossFn  # mean loss of one batch (a scalar)
    extras: Dict[str, Any]  # what analysis.batches needs (fairseq task, tokenizer, number of classes, ...)


def load_checkpoint(
    path: Union[str, Path],
    framework: str = "auto",
    *,
    trust_checkpoint: bool = False,
    data: Optional[Union[str, Path]] = None,
    arch: Optional[str] = None,
    num_classes: Optional[int] = None,
    num_labels: Optional[int] = None,
    model_factory: Optional[str] = None,
    device: str = "cpu",
    seed: int = 1,
) -> LoadedModel:
    """Load ``path`` as ``framework`` (or detect it with ``"auto"``) for analysis.

    - a folder with ``config.json``: Hugging Face transformers, as a sequence classifier
      (``num_labels`` adds a head, initialised from ``seed``, when the folder has none);
    - a ``.pt`` holding ``model`` and ``cfg``/``args``: a fairseq checkpoint, rebuilt from its stored
      config with the dictionaries of ``data`` (default: the data directory recorded in it);
    - a state dict (``.pt``/``.pth``/``.bin`` or ``.safetensors``) with ``arch`` (and
      ``num_classes``): a torchvision model; with ``model_factory="module:function"``: your model.

    Raises :class:`UserError` with one line naming the file and the problem for anything a user can fix.
    """
    if framework != "auto" and framework not in FRAMEWORKS:
        raise UserError(f"framework {framework!r}: unknown; choose auto, {', '.join(FRAMEWORKS)}")
    path = Path(path)
    target = check_device(device)
    if not path.exists():
        raise UserError(f"{path}: no such file or directory")
    if path.is_dir():
        if framework not in ("auto", "transformers"):
            raise UserError(f"{path}: is a directory; framework {framework} needs a checkpoint file")
        loaded = _load_transformers(path, trust_checkpoint, num_labels, seed)
    else:
        if framework == "transformers":
            raise UserError(f"{path}: a Hugging Face model is a folder with config.json, not a file")
        content, trusted = _read_weights(path, trust_checkpoint)
        if framework in ("auto", "fairseq") and _is_fairseq_checkpoint(content):
            loaded = _load_fairseq(path, content, data, seed)
        elif framework == "fairseq":
            raise UserError(f"{path}: not a fairseq checkpoint (it has no 'model' with 'cfg' or 'args' entries)")
        else:
            loaded = _load_state_dict_model(path, content, framework, arch, num_classes, model_factory, seed)
        if trusted:
            loaded.description += "; read with arbitrary unpickling (trusted checkpoint)"
    loaded.model.to(target).eval()
    return loaded


def import_callable(spec: str, flag: str) -> Tuple[ModuleType, Callable[..., Any]]:
    """The module and the function named by ``"module:function"`` (``module`` importable, or a ``.py`` file)."""
    module_name, _, attribute = spec.rpartition(":")
    if not module_name or not attribute:
        raise UserError(f"{flag} {spec}: expected module:function (a module name or a .py file, then the function)")
    if module_name.endswith(".py"):
        file = Path(module_name)
        if not file.is_file():
            raise UserError(f"{flag} {spec}: no such file {file}")
        unique_name = f"_intradist_user_{hashlib.sha256(str(file.resolve()).encode()).hexdigest()[:12]}_{file.stem}"
        module_spec = importlib.util.spec_from_file_location(unique_name, file)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[unique_name] = module
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name and module_name.startswith(error.name):
                raise UserError(f"{flag} {spec}: no module named {module_name!r} (is it on PYTHONPATH?)") from None
            raise
    function = getattr(module, attribute, None)
    if not callable(function):
        raise UserError(f"{flag} {spec}: {module_name} has no function {attribute!r}")
    return module, function


# ---------------------------------------------------------------------------------------------
# Reading files safely


def _read_weights(path: Path, trust_checkpoint: bool) -> Tuple[Any, bool]:
    """The content of a ``.safetensors`` file or a pickle, and whether reading it needed trust."""
    if path.suffix == ".safetensors":
        try:
            return safetensors.torch.load_file(str(path), device="cpu"), False
        except Exception as error:  # safetensors reports a bad header or truncated data in one exception type
            raise UserError(f"{path}: cannot be read as a .safetensors file, truncated or corrupt ({_first_line(error)})")
    return _torch_load(path, trust_checkpoint)


def _torch_load(path: Path, trust_checkpoint: bool) -> Tuple[Any, bool]:
    """``torch.load`` weights-only; with trust, falls back to full unpickling when the file needs it."""
    allow_plain_checkpoint_types()
    try:
        return torch.load(path, map_location="cpu", weights_only=True), False
    except pickle.UnpicklingError as error:
        message = str(error)
        if not message.startswith("Weights only load failed"):
            raise UserError(f"{path}: cannot be read as a PyTorch checkpoint, truncated or corrupt ({_first_line(error)})")
        if not trust_checkpoint:
            found = re.search(r"GLOBAL ([\w.]+)", message)
            needed = found.group(1) if found else "a type torch does not allow"
            raise UserError(
                f"{path}: needs arbitrary unpickling ({needed}); pass --trust-checkpoint only if you trust its source"
            ) from None
    except Exception as error:  # torch reports truncation and corruption with many exception types
        raise UserError(f"{path}: cannot be read as a PyTorch checkpoint, truncated or corrupt ({_first_line(error)})")
    try:
        return torch.load(path, map_location="cpu", weights_only=False), True
    except Exception as error:  # the trusted file may still be corrupt
        raise UserError(f"{path}: cannot be unpickled even with --trust-checkpoint ({_first_line(error)})")


def _first_line(error: BaseException) -> str:
    """The error's type and the first sentence of its message, for a one-line report."""
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0].split('. ')[0]}" if text else type(error).__name__


def check_device(device: str) -> torch.device:
    """``device`` as a torch device, refused in one line when malformed or absent on this machine."""
    try:
        target = torch.device(device)
    except RuntimeError:
        raise UserError(f"--device {device}: not a torch device (cpu, cuda, cuda:1, mps)") from None
    if target.type == "cuda" and (target.index or 0) >= torch.cuda.device_count():
        raise UserError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA devices")
    return target


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Build with torch's CPU generator seeded, leaving the caller's random state as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _count(number: int) -> str:
    if number >= 1e6:
        return f"{number / 1e6:.1f}M"
    return f"{number / 1e3:.1f}k" if number >= 1e3 else str(number)


def _parameters(model: torch.nn.Module) -> str:
    return f"{_count(sum(p.numel() for p in model.parameters()))} parameters"


# ---------------------------------------------------------------------------------------------
# fairseq


def _is_fairseq_checkpoint(content: Any) -> bool:
    return (
        isinstance(content, Mapping)
        and "model" in content
        and (content.get("cfg") is not None or content.get("args") is not None)
    )


def _recorded_data(state: Mapping[str, Any]) -> Optional[str]:
    """The data directory the checkpoint was trained on (its first shard)."""
    if state.get("args") is not None:
        data = getattr(state["args"], "data", None)
    else:
        task = state["cfg"].get("task")
        data = task.get("data") if isinstance(task, Mapping) else getattr(task, "data", None)
    return str(data).split(":")[0] if data else None


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


def _load_fairseq(path: Path, state: Dict[str, Any], data: Optional[Union[str, Path]], seed: int) -> LoadedModel:
    """Rebuild a fairseq model from its stored config, with the task (and dictionaries) of the data directory.

    fairseq is imported here, when a fairseq checkpoint is loaded, with the project's plugin
    (``user_dir``: checkpoints of its task and criterions rebuild too).
    """
    import user_dir  # noqa: F401  (imports fairseq; registers the plugin's task and criterions)
    from fairseq import checkpoint_utils, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    recorded = _recorded_data(state)
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
        raise UserError(f"{data_dir}: cannot set up the checkpoint's task {task_name} ({_first_line(error)})") from None
    try:
        with _seeded(seed):
            (model,), cfg, task = checkpoint_utils.load_model_ensemble_and_task(
                [str(path)], arg_overrides=overrides, task=task, state=state
            )
    except RuntimeError as error:  # load_state_dict: weights that do not fit the rebuilt model
        raise UserError(
            f"{path}: its weights do not fit the model rebuilt with the dictionaries of {data_dir} ({_first_line(error)})"
        ) from None
    parts = [getattr(model, name, None) for name in ("encoder", "decoder")]
    layers = [str(len(part.layers)) for part in parts if hasattr(part, "layers")]
    arch = getattr(cfg.model, "arch", None) or getattr(cfg.model, "_name", None) or type(model).__name__
    description = (
        f"fairseq checkpoint: {arch}, task {task_name}, "
        + (f"{'+'.join(layers)} layers, " if layers else "")
        + f"{_parameters(model)} (dictionaries from {data_dir})"
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
    net_output = model(**sample["net_input"])
    lprobs = model.get_normalized_probs(net_output, log_probs=True)
    target = model.get_targets(sample, net_output)
    return F.nll_loss(lprobs.reshape(-1, lprobs.size(-1)), target.reshape(-1), ignore_index=padding_idx)


# ---------------------------------------------------------------------------------------------
# Hugging Face transformers


def _load_transformers(folder: Path, trust_checkpoint: bool, num_labels: Optional[int], seed: int) -> LoadedModel:
    """A sequence classifier from a model folder; a missing head is initialised from ``seed``."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    if not (folder / "config.json").is_file():
        raise UserError(
            f"{folder}: a directory without config.json is no Hugging Face model folder; "
            f"give a model folder or a checkpoint file (.pt, .pth, .safetensors)"
        )
    weights = next((folder / name for name in HF_WEIGHT_FILES if (folder / name).is_file()), None)
    if weights is None:
        raise UserError(f"{folder}: has config.json but no weights file ({' or '.join(HF_WEIGHT_FILES)})")
    # transformers reads .bin weights-only itself; read it once here to refuse (or trust) it our way first.
    trusted = weights.suffix == ".bin" and _torch_load(weights, trust_checkpoint)[1]
    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as error:
        raise UserError(f"{folder}/config.json: not a usable transformers config ({_first_line(error)})") from None
    architecture = (config.architectures or [type(config).__name__])[0]
    has_head = architecture.endswith("ForSequenceClassification")
    if has_head and num_labels is not None and num_labels != config.num_labels:
        raise UserError(
            f"{folder}: {architecture} has {config.num_labels} labels, --num-labels says {num_labels}; drop --num-labels"
        )
    if not has_head and num_labels is None:
        raise UserError(
            f"{folder}: {architecture} has no sequence-classification head; pass --num-labels N to add a newly "
            f"initialised one"
        )
    head_options = {} if has_head else {"num_labels": num_labels}
    try:
        with _seeded(seed), quiet_transformers():
            model, info = AutoModelForSequenceClassification.from_pretrained(
                folder, local_files_only=True, weights_only=not trusted, output_loading_info=True, **head_options
            )
    except (OSError, ValueError) as error:
        raise UserError(f"{folder}: cannot be loaded as a sequence classifier ({_first_line(error)})") from None
    new = sorted(info["missing_keys"])
    description = (
        f"transformers model folder: {architecture} ({config.model_type}) loaded as {type(model).__name__}, "
        f"{model.config.num_labels} labels, {_parameters(model)}, weights from {weights.name}"
    )
    if new:
        description += f"; classification head newly initialised (seed {seed}: {', '.join(new)})"
    if trusted:
        description += "; read with arbitrary unpickling (trusted checkpoint)"
    return LoadedModel(
        model=model,
        framework="transformers",
        path=folder,
        sha256=sha256_of(weights),
        description=description,
        loss_fn=sequence_classification_loss,
        extras={"tokenizer": _tokenizer(folder)},
    )


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report and progress bar (the description says what was initialised)."""
    from transformers.utils import logging as hf_logging

    verbosity, progress = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hub = logging.getLogger("huggingface_hub")  # its warnings about unreachable hosts precede our one-line error
    hub_level = hub.level
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    hub.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        hub.setLevel(hub_level)
        if progress:
            hf_logging.enable_progress_bar()


def _tokenizer(folder: Path) -> Any:
    """The folder's tokenizer, or None when it has no vocabulary file (batches then need a hook)."""
    from transformers import AutoTokenizer

    if not any((folder / name).is_file() for name in HF_VOCABULARY_FILES):
        return None  # transformers would build an empty tokenizer that maps every word to [UNK]
    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError):
        return None


def sequence_classification_loss(model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The model's own loss for a batch holding ``labels`` (cross-entropy; mean squared error for one label)."""
    return model(**batch).loss


# ---------------------------------------------------------------------------------------------
# State dicts: torchvision architectures and user model factories


def _as_state_dict(content: Any) -> Optional[Dict[str, torch.Tensor]]:
    """The tensors of a state dict, unwrapping ``{"state_dict": ...}``/``{"model": ...}`` and ``module.``."""
    if not isinstance(content, Mapping):
        return None
    for key in ("state_dict", "model"):
        inner = content.get(key)
        if isinstance(inner, Mapping) and _all_tensors(inner):
            content = inner
            break
    if not _all_tensors(content):
        return None
    if all(key.startswith("module.") for key in content):
        return {key[len("module.") :]: value for key, value in content.items()}
    return dict(content)


def _all_tensors(mapping: Mapping[Any, Any]) -> bool:
    return bool(mapping) and all(isinstance(k, str) and torch.is_tensor(v) for k, v in mapping.items())


def _describe_content(content: Any) -> str:
    if isinstance(content, Mapping):
        keys = ", ".join(map(repr, list(content)[:5])) + (", ..." if len(content) > 5 else "")
        return f"a dict with keys {keys}"
    return f"a {type(content).__name__}"


def _load_state_dict_model(
    path: Path,
    content: Any,
    framework: str,
    arch: Optional[str],
    num_classes: Optional[int],
    model_factory: Optional[str],
    seed: int,
) -> LoadedModel:
    """A torchvision architecture (``arch``) or the user's factory, filled strictly from a state dict."""
    state_dict = _as_state_dict(content)
    if state_dict is None:
        raise UserError(f"{path}: holds {_describe_content(content)}, neither a fairseq checkpoint nor a state dict")
    if framework == "auto":
        if arch is not None and model_factory is not None:
            raise UserError(f"{path}: pass either --arch (torchvision) or --model-factory, not both")
        if arch is None and model_factory is None:
            raise UserError(
                f"{path}: a state dict of {len(state_dict)} tensors says nothing about its architecture; pass "
                f"--arch NAME [--num-classes N] for a torchvision model or --model-factory module:function"
            )
        framework = "torchvision" if arch is not None else "state_dict"
    kind = f"state dict ({path.suffix or 'no suffix'})"
    if framework == "torchvision":
        model = _torchvision_model(path, arch, num_classes, seed)
        _load_strictly(model, state_dict, path, f"torchvision {arch} with {num_classes} classes")
        description = f"torchvision {kind}: {arch}, {num_classes} classes, {_parameters(model)}"
        loss_fn: LossFn = image_classification_loss
        extras: Dict[str, Any] = {"arch": arch, "num_classes": num_classes}
    else:
        if model_factory is None:
            raise UserError(f"{path}: framework state_dict needs --model-factory module:function")
        module, factory = import_callable(model_factory, "--model-factory")
        with _seeded(seed):
            model = factory()
        if not isinstance(model, torch.nn.Module):
            raise UserError(f"--model-factory {model_factory}: returned a {type(model).__name__}, not a torch.nn.Module")
        _load_strictly(model, state_dict, path, f"the model of {model_factory}")
        custom_loss = getattr(module, "loss_fn", None)
        loss_fn = custom_loss if callable(custom_loss) else image_classification_loss
        description = (
            f"{kind} for {model_factory}: {type(model).__name__}, {_parameters(model)}, loss "
            + ("loss_fn of the factory's module" if callable(custom_loss) else "cross-entropy")
        )
        extras = {"factory": model_factory}
    return LoadedModel(
        model=model,
        framework=framework,
        path=path,
        sha256=sha256_of(path),
        description=description,
        loss_fn=loss_fn,
        extras=extras,
    )


def _torchvision_model(path: Path, arch: Optional[str], num_classes: Optional[int], seed: int) -> torch.nn.Module:
    import torchvision

    if arch is None or num_classes is None:
        raise UserError(
            f"{path}: a torchvision model needs --arch NAME (a torchvision.models name, e.g. resnet18) "
            f"and --num-classes N"
        )
    names = torchvision.models.list_models()
    if arch not in names:
        raise UserError(f"--arch {arch}: not a torchvision.models name (e.g. {', '.join(names[:4])}, ...)")
    with _seeded(seed):
        return torchvision.models.get_model(arch, weights=None, num_classes=num_classes)


def _load_strictly(model: torch.nn.Module, state_dict: Dict[str, torch.Tensor], path: Path, what: str) -> None:
    """``load_state_dict(strict=True)``, with a one-line error listing what does not fit."""
    expected = model.state_dict()
    mismatched = [
        f"{key} {tuple(state_dict[key].shape)} in the file, {tuple(value.shape)} in the model"
        for key, value in expected.items()
        if key in state_dict and state_dict[key].shape != value.shape
    ]
    problems: List[str] = []
    for label, items in (
        ("missing", [key for key in expected if key not in state_dict]),
        ("unexpected", [key for key in state_dict if key not in expected]),
        ("shape mismatch", mismatched),
    ):
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            problems.append(f"{label}: {', '.join(items[:3])}{more}")
    if problems:
        raise UserError(f"{path}: the state dict does not fit {what}; " + "; ".join(problems))
    model.load_state_dict(state_dict, strict=True)


def image_classification_loss(model: torch.nn.Module, batch: Tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy of ``model(inputs)`` against integer ``targets`` for a batch ``(inputs, targets)``."""
    inputs, targets = batch
    return F.cross_entropy(model(inputs), targets)

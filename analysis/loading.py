"""Load a trained model of any supported framework for analysis, without running code from the file.

``load_checkpoint`` detects what a path holds (a fairseq checkpoint, a Hugging Face model folder, a
torchvision or custom state dict), rebuilds the model on the requested device in eval mode, and
returns it with a loss function for one batch and what :mod:`intradist.analysis.batches` needs to make
batches the checkpoint's own way. Each framework's loader lives in :mod:`intradist.analysis.loaders`.

Safety: every pickle (``.pt``, ``.pth``, ``.bin``) is read with ``torch.load(weights_only=True)``
after :mod:`intradist.checkpoint_safety` allow-listed the plain-data types fairseq stores;
``.safetensors`` holds no code at all. A file whose unpickling needs any other global is refused
unless the caller passes ``trust_checkpoint=True``. Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

from intradist.analysis.loaders.fairseq_checkpoint import is_fairseq_checkpoint, load_fairseq
from intradist.analysis.loaders.model import LoadedModel, check_device
from intradist.analysis.loaders.safe_reading import read_weights
from intradist.analysis.loaders.state_dict import image_classification_loss, load_state_dict_model
from intradist.analysis.loaders.transformers_folder import HEADS, load_transformers, quiet_transformers
from intradist.errors import UserError

#: What other code imports from here: the loader and its result, the device check (the vision trainer), the
#: quiet transformers loading (the GLUE trainer) and the image loss (tests build a LoadedModel with it).
__all__ = ["FRAMEWORKS", "HEADS", "LoadedModel", "check_device", "image_classification_loss", "load_checkpoint",
           "quiet_transformers"]  # fmt: skip

FRAMEWORKS = ("fairseq", "transformers", "torchvision", "state_dict")


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
    head: Optional[str] = None,
) -> LoadedModel:
    """Load ``path`` as ``framework`` (or detect it with ``"auto"``) for analysis.

    - a folder with ``config.json``: Hugging Face transformers, with the head of its
      ``config.architectures`` or ``head`` (one of :data:`HEADS`; ``num_labels`` sets a new
      classifier's labels; a new head is initialised from ``seed``); weights in one file or shards;
    - a ``.pt`` holding ``model`` and ``cfg``/``args``: a fairseq checkpoint, rebuilt from its stored
      config with the dictionaries of ``data`` (default: the data directory recorded in it);
    - a state dict (``.pt``/``.pth``/``.bin`` or ``.safetensors``) with ``arch`` (and
      ``num_classes``): a torchvision model; with ``model_factory="module:function"``: your model.
      The checkpoint of an ``intradist train vision`` run brings its classes and evaluation transform.

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
        loaded = load_transformers(path, trust_checkpoint, num_labels, seed, head)
    else:
        if head is not None:
            raise UserError(f"--head {head}: chooses the head of a Hugging Face model folder; {path} is a file")
        if framework == "transformers":
            raise UserError(f"{path}: a Hugging Face model is a folder with config.json, not a file")
        content, trusted = read_weights(path, trust_checkpoint)
        if framework in ("auto", "fairseq") and is_fairseq_checkpoint(content):
            loaded = load_fairseq(path, content, data, seed)
        elif framework == "fairseq":
            raise UserError(f"{path}: not a fairseq checkpoint (it has no 'model' with 'cfg' or 'args' entries)")
        else:
            loaded = load_state_dict_model(path, content, framework, arch, num_classes, model_factory, seed)
        if trusted:
            loaded.description += "; read with arbitrary unpickling (trusted checkpoint)"
    loaded.model.to(target).eval()
    return loaded

"""What an ``intradist train vision`` run left beside its checkpoint: its class list and evaluation transform.

A run folder holds ``model.pt`` (and ``model_last.pt``), the marker of a completed
``intradist train vision`` run and ``metrics.json`` with the run's ``classes`` (name -> id by
position), ``image_size`` and ``data_kind``. The analysis of such a checkpoint reads an image folder
with that transform and those ids: a folder may lack classes (the others keep their ids), but a class
the run never saw is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from intradist.analysis.image_transforms import NATIVE_SIZES, make_transform
from intradist.errors import UserError
from intradist.run_folder import read_marker

#: The command whose run folders carry a class list and a transform (``intradist.trainers.vision_training.COMMAND``).
VISION_COMMAND = "intradist train vision"


@dataclass(frozen=True)
class VisionRun:
    """The run a checkpoint came from: where, its architecture, classes, image size and data source."""

    folder: Path
    arch: str
    classes: List[str]
    image_size: int
    kind: str  # the trainer's data_kind: digits, cifar10, cifar100, pet, folder
    fc_bias: bool

    def transform(self, image_size: Optional[int]) -> Callable[[torch.Tensor], torch.Tensor]:
        """The run's evaluation transform (uint8 ``[3, H, W]`` in); ``image_size`` must be the run's or None."""
        if image_size is not None and image_size != self.image_size:
            raise UserError(f"--image-size {image_size}: the run in {self.folder} was trained and evaluated at "
                            f"{self.image_size}; drop --image-size")  # fmt: skip
        return make_transform(self.image_size, train=False, augment="none", kind=self.kind,
                              native_size=NATIVE_SIZES.get(self.kind))  # fmt: skip

    def class_ids(self, root: Path, folders: Sequence[str]) -> Dict[str, int]:
        """The run's id of each class folder of ``root``; a folder the run has no class for is refused."""
        ids = {name: index for index, name in enumerate(self.classes)}
        unknown = [name for name in folders if name not in ids]
        if unknown:
            shown = ", ".join(self.classes[:5]) + (", ..." if len(self.classes) > 5 else "")
            raise UserError(f"{root}: class folder {unknown[0]!r} is not a class of the run in {self.folder} "
                            f"({len(self.classes)} classes: {shown})")  # fmt: skip
        return {name: ids[name] for name in folders}


def vision_run(checkpoint: Path) -> Optional[VisionRun]:
    """The ``intradist train vision`` run whose folder holds ``checkpoint``, or None when it is none."""
    folder = checkpoint.parent
    if (read_marker(folder) or {}).get("command") != VISION_COMMAND or not (folder / "metrics.json").is_file():
        return None
    try:
        metrics: Any = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        run = VisionRun(folder, str(metrics["arch"]), [str(name) for name in metrics["classes"]],
                        int(metrics["image_size"]), str(metrics["data_kind"]),
                        bool(metrics.get("fc_bias", True)))  # fmt: skip
    except (ValueError, KeyError, TypeError) as error:
        raise UserError(f"{folder / 'metrics.json'}: not the record of a finished intradist train vision run "
                        f"({type(error).__name__}: {error})") from None  # fmt: skip
    return run

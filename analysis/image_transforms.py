"""The image transforms of ``intradist train vision``: uint8 ``[3, H, W]`` in, normalised float ``[3, S, S]`` out.

One pipeline (torchvision ``transforms.v2``) for every source: augmentation (``imagenet``:
RandomResizedCrop + horizontal flip; ``pad-crop``: random crop after padding by 1/8 of the side,
plus a flip except for digits; ``none``), then for evaluation Resize + CenterCrop (photos are
resized to 256/224 of the crop first, ImageNet-style; CIFAR and digits, square at their native
size, are not), and ImageNet mean/std normalisation.

They live on the analysis floor so that ``analyze-sensitivity`` reads the images of a
``train vision`` run with the run's own evaluation transform; the trainer imports them from
:mod:`intradist.trainers.vision_transforms`.
"""

from __future__ import annotations

from typing import Any, Callable, List, Optional

import torch

from intradist.errors import UserError

#: ImageNet statistics: every source is normalised with them (and any image folder the analysis reads).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The side of the square images of the sources that have one (the rest, photos, are resized ImageNet-style).
NATIVE_SIZES = {"digits": 8, "cifar10": 32, "cifar100": 32}
#: ``--augment``: ``auto`` picks ``pad-crop`` for digits and ``imagenet`` for everything else.
AUGMENTATIONS = ("auto", "imagenet", "pad-crop", "none")


def resolve_augmentation(augment: str, kind: str) -> str:
    """``auto``: ``pad-crop`` for digits, ``imagenet`` (RandomResizedCrop + flip) for everything else."""
    if augment not in AUGMENTATIONS:
        raise UserError(f"--augment {augment}: choose one of {', '.join(AUGMENTATIONS)}")
    if augment == "auto":
        return "pad-crop" if kind == "digits" else "imagenet"
    return augment


def make_transform(image_size: int, train: bool, augment: str, kind: str,
                   native_size: Optional[int]) -> Callable[[torch.Tensor], torch.Tensor]:  # fmt: skip
    """uint8 ``[3, H, W]`` -> normalised float ``[3, S, S]``, augmented for training (see the module docstring)."""
    from torchvision.transforms import v2

    augment = resolve_augmentation(augment, kind)
    steps: List[Any] = []
    if train and augment == "imagenet":
        steps += [v2.RandomResizedCrop(image_size, antialias=True)]
    else:
        resize = image_size if native_size else round(image_size * 256 / 224)
        if native_size != image_size:
            steps.append(v2.Resize(resize, antialias=True))
        steps.append(v2.CenterCrop(image_size))
        if train and augment == "pad-crop":
            steps.append(v2.RandomCrop(image_size, padding=max(1, image_size // 8)))
    if train and augment != "none" and kind != "digits":  # digits are not mirror-symmetric
        steps.append(v2.RandomHorizontalFlip())
    steps += [v2.ToDtype(torch.float32, scale=True), v2.Normalize(IMAGENET_MEAN, IMAGENET_STD)]
    return v2.Compose(steps)

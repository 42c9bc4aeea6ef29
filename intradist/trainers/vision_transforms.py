"""The image transforms of ``intradist train vision`` (see :mod:`intradist.analysis.image_transforms`).

They live on the analysis floor so that ``analyze-sensitivity`` reads a run's images the way the run
evaluated them; the trainer imports them from here under their old names.
"""

from intradist.analysis.image_transforms import (  # noqa: F401
    AUGMENTATIONS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    NATIVE_SIZES,
    make_transform,
    resolve_augmentation,
)

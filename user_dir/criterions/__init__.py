"""fairseq criterions of the plugin; each is a thin adapter over :mod:`intradist.losses`."""

from user_dir.criterions import intra_distillation, label_smoothed_kd  # noqa: F401

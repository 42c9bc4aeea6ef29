"""intradist: intra-distillation and parameter-sensitivity analysis for PyTorch.

The public API for code of one's own (README, "Library use"):

- :mod:`intradist.losses`: the loss math, plain torch (``intra_distillation_loss``,
  ``adaptive_alpha``, ``kd_loss``, ``label_smoothed_nll_loss``, ``classification_objective``);
- :class:`intradist.settings.DistillationSettings`: K, α and its schedule, label smoothing and
  KD as one validated object whose ``objective`` runs the K passes of a step;
- :class:`intradist.trainers.api.IntraDistillationTrainer`: a ``transformers.Trainer`` that
  trains any Hugging Face model with intra-distillation.

This package module imports nothing, so importing any part of intradist stays cheap; the
floors of the package are in docs/architecture.md.
"""

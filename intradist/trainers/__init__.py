"""Trainers outside fairseq that call the same loss code: GLUE (transformers) and vision (torchvision).

Each is a thin adapter: it turns its framework's batches and models into K stochastic passes and
hands them to :func:`intradist.losses.classification_objective` through
:mod:`intradist.settings`, so the formulas exist once, in :mod:`intradist.losses`.
"""

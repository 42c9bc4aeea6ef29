"""Parameter-balance studies: rounds of self-distillation versus one run of intra-distillation.

The paper's motivating case study (Xu et al. 2022, Sec. 2): the standard deviation of the
parameter sensitivities shrinks over rounds of self-distillation while the model improves, and
intra-distillation is argued to reach that balance in one run. Its reproduction found the raw
statistic contradicting the claim in three of four cases, a loss-normalized one supporting it.
A study here trains

    round 0 (the baseline) -> round 1 (taught by round 0) -> ... -> round R, and intra-distillation,

scores every model (BLEU on the test set, or test accuracy for images), computes the Taylor
sensitivities |θ ∂L/∂θ| of every model on the *same* validation batches, raw and loss-normalized
(:func:`intradist.analysis.pipeline.analyze`), and writes one report: ``study.md``, ``study.json`` and
``study.png`` (score and balance per model) beside the full sensitivity report in ``analysis/``.
The claims are checked, not assumed: ``study.md`` says for each statistic and normalization
whether it fell over the rounds and whether intra-distillation is below the baseline.

The rounds are a chain; the intra-distillation model does not depend on it, so with ``--jobs 2``
it trains at the same time, each process on one thread (the sizes of the Multi30k defaults were
chosen for 2 CPU cores; docs/studies/ has the measured times).

One concern per module: :mod:`.settings` (what a study is given), :mod:`.models` (training and
scoring the models), :mod:`.claims` (the paper's claims, checked), :mod:`.report` (study.md,
study.json, study.png), :mod:`.studies` (a whole study, end to end) and :mod:`.command` (the
``intradist study balance`` click group).
"""

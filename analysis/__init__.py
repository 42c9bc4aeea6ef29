"""Parameter sensitivity and contribution balance of trained models, for any framework.

A library first (a notebook can call every step), with ``analyze-sensitivity`` as a thin shell:

    from intradist.analysis import load_checkpoint, make_batches, BatchOptions, taylor_sensitivity, balance_statistics
    loaded = load_checkpoint("checkpoint_best.pt", data="data-bin")          # weights-only, any framework
    batches = make_batches(loaded, BatchOptions(data="data-bin", max_batches=20))
    result = taylor_sensitivity(loaded.model, batches, loaded.loss_fn)       # s_j = |θ_j · ∂L/∂θ_j|
    balance_statistics(result)                                               # std (the paper's), Gini, ...
    result.table("layer")                                                    # a pandas DataFrame
"""

from intradist.analysis.balance import balance_by_group, balance_statistics
from intradist.analysis.batches import BatchOptions, make_batches
from intradist.analysis.loading import LoadedModel, load_checkpoint
from intradist.analysis.pipeline import AnalysisOptions, analyze
from intradist.analysis.sensitivity import ParameterSensitivity, ablation_sensitivity, sensitivity, taylor_sensitivity

__all__ = [
    "AnalysisOptions", "BatchOptions", "LoadedModel", "ParameterSensitivity", "ablation_sensitivity", "analyze",
    "balance_by_group", "balance_statistics", "load_checkpoint", "make_batches", "sensitivity", "taylor_sensitivity",
]  # fmt: skip

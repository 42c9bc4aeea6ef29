"""A balance study's report: ``study.md``, ``study.json`` and ``study.png`` beside its ``analysis/``."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Dict, List, Sequence

from intradist.studies.balance.claims import check_claims
from intradist.studies.balance.models import StudyModel


def _yes(value: bool) -> str:
    return "yes" if value else "**no**"


def study_markdown(title: str, models: Sequence[StudyModel], balance, checks, score_name: str, command: str,
                   settings: Dict[str, object], minutes: float) -> str:  # fmt: skip
    """The study's report: models with score and balance, the claims checked, how it was made."""
    from intradist.results import markdown_table

    rows = []
    for m in models:
        raw, normalized = balance[m.label]["raw"], balance[m.label]["loss-normalized"]
        rows.append([m.label, m.kind, m.teacher or "—", f"{m.score:.2f}", f"{m.train_seconds / 60:.1f}",
                     f"{raw['std']:.3g}", f"{raw['cv']:.3f}", f"{raw['gini']:.4f}", f"{raw['top1_share']:.3f}",
                     f"{normalized['std']:.3g}", f"{normalized['cv']:.3f}", f"{normalized['gini']:.4f}"])  # fmt: skip
    header = ["model", "method", "teacher", score_name, "train min", "std (raw)", "CV (raw)", "Gini (raw)",
              "top-1 % (raw)", "std (loss-norm.)", "CV (loss-norm.)", "Gini (loss-norm.)"]  # fmt: skip
    claim_rows = [[c["statistic"], c["normalization"], _yes(c["falls_every_round"]), _yes(c["last_round_below_baseline"]),
                   _yes(c["intra_below_baseline"]), _yes(c["intra_below_last_round"])] for c in checks]  # fmt: skip
    claim_header = ["statistic", "normalization", "falls every round", "last round < baseline",
                    "intra < baseline", "intra < last round"]  # fmt: skip
    reused = [m.label for m in models if m.reused]
    training = sum(m.train_seconds for m in models) / 60
    timing = f"{minutes:.0f} min wall-clock; the models' training took {training:.0f} min in all"
    if reused:
        timing += f", {', '.join(reused)} trained by an earlier invocation into the same folder"
    return "\n".join([
        f"# {title}", "",
        f"Command (run {time.strftime('%Y-%m-%d')}; {timing}):", "", "```bash", command, "```", "",
        "Every model's Taylor sensitivities |θ ∂L/∂θ| were computed on the same batches (validation sentences for "
        "translation, test images for vision); "
        "*loss-normalized* divides each model's sensitivities by its mean loss on them. Smaller std, CV "
        "and Gini mean more evenly contributing parameters. The numbers are as measured.", "",
        "## Models", "", markdown_table(header, rows, align_right_from=3), "",
        "## The paper's claims, checked", "", markdown_table(claim_header, claim_rows, align_right_from=2), "",
        "![score and balance per model](study.png)", "",
        "The full sensitivity report (per layer and module, distributions): `analysis/report.html` of the "
        "study's output folder.", "",
        "## Settings", "", "```json", json.dumps(settings, indent=2), "```", "",
    ])  # fmt: skip


def plot_study(models: Sequence[StudyModel], balance, score_name: str, path: Path) -> None:
    """Score, std (raw and loss-normalized) and Gini per model: the rounds in order, intra-distillation last."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [m.label for m in models]
    colors = ["#4c72b0" if m.kind != "intra" else "#dd8452" for m in models]
    panels = [(score_name, [m.score for m in models]),
              ("std, raw", [balance[m.label]["raw"]["std"] for m in models]),
              ("std, loss-normalized", [balance[m.label]["loss-normalized"]["std"] for m in models]),
              ("Gini, raw", [balance[m.label]["raw"]["gini"] for m in models])]  # fmt: skip
    figure, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4))
    for axis, (name, values) in zip(axes, panels):
        axis.bar(labels, values, color=colors)
        axis.set_title(name)
        axis.tick_params(axis="x", rotation=45)
        low, high = min(values), max(values)
        margin = (high - low) * 0.5 or abs(high) * 0.05 or 1.0
        axis.set_ylim(max(0.0, low - margin) if low >= 0 else low - margin, high + margin)
    figure.suptitle("self-distillation rounds (blue) and intra-distillation (orange)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_study(out: Path, title: str, models: List[StudyModel], score_name: str, command: str,
                settings: Dict[str, object], minutes: float) -> Dict[str, object]:  # fmt: skip
    """study.json, study.md and study.png in ``out`` (which holds ``analysis/``)."""
    from intradist.analysis.report import read_balance

    balance = read_balance(out / "analysis")
    checks = check_claims(models, balance)
    record = {"title": title, "command": command, "settings": settings, "wall_minutes": round(minutes, 1),
              "score": score_name, "models": [asdict(m) for m in models], "balance": balance, "claims": checks}  # fmt: skip
    plot_study(models, balance, score_name, out / "study.png")
    (out / "study.json").write_text(json.dumps(record, indent=2) + "\n")
    (out / "study.md").write_text(study_markdown(title, models, balance, checks, score_name, command, settings, minutes))
    return record

"""Reports of a sensitivity analysis: CSV, JSON with provenance, seaborn plots, markdown and HTML.

Everything is written into ``OUT.partial`` and renamed to ``OUT`` at the end, so an interrupted
run never leaves a report that looks complete. The HTML report is self-contained (images
embedded as data URIs, inline styles, no scripts, no fonts or other external resources), so it
can be mailed, archived or opened offline.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import math
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import pandas as pd
import torch

from intradist.analysis.balance import balance_by_group, balance_statistics
from intradist.analysis.grouping import layer_of, role_of
from intradist.analysis.sensitivity import ParameterSensitivity
from intradist.balance_statistics import CHUNK
from intradist.provenance import package_versions

#: Values drawn per checkpoint for the distribution plots (statistics always use every parameter).
PLOT_SAMPLE = 200_000

#: Balance statistics shown in the summary tables, with their labels.
SUMMARY_STATISTICS = {
    "std": "std (paper)",
    "cv": "coefficient of variation",
    "gini": "Gini",
    "normalized_entropy": "normalized entropy",
    "top1_share": "top 1 % share",
    "top10_share": "top 10 % share",
    "near_zero_share": "near-zero share",
    "mean": "mean",
}

NORMALIZATION_NAMES = {None: "raw", "loss": "loss-normalized"}

#: The balance statistics the summary sentence compares, and which way is more balanced (see
#: :func:`intradist.analysis.balance.balance_statistics`): a lower spread, Gini coefficient or top
#: share, a higher entropy. The mean and the near-zero share are not compared: neither orders balance.
MORE_BALANCED_WHEN = {"std": "lower", "cv": "lower", "gini": "lower", "normalized_entropy": "higher",
                      "top1_share": "lower", "top10_share": "lower"}  # fmt: skip

#: The column of the difference view for parameters outside any numbered block (embeddings, heads).
OUTSIDE_BLOCKS = "(outside blocks)"


@dataclass
class CheckpointAnalysis:
    """One checkpoint's results: what it is, and its sensitivities (one per normalization)."""

    label: str
    path: Path
    framework: str
    description: str
    sha256: str
    sensitivities: Dict[Optional[str], ParameterSensitivity]  # normalize -> result
    balance: Dict[str, Dict[str, float]] = field(default_factory=dict)  # "raw"/"loss-normalized" -> statistics

    def __post_init__(self) -> None:
        if not self.balance:
            self.balance = {NORMALIZATION_NAMES[n]: balance_statistics(s) for n, s in self.sensitivities.items()}


def versions() -> Dict[str, str]:
    """Versions that determine the numbers: Python, torch and the frameworks present."""
    return package_versions(("torch", "fairseq-fixed", "transformers", "torchvision", "intradist"))


def _working_folders() -> List[str]:
    """The current folder as the process sees it and with its links resolved, longest first."""
    return sorted({os.getcwd(), str(Path.cwd().resolve())}, key=len, reverse=True)


def shown_path(path: Union[str, Path]) -> str:
    """``path`` as a report shows it: relative to the current folder when it is an absolute path
    under it, else exactly as given (a relative path is never resolved to an absolute one)."""
    given = Path(path)
    if given.is_absolute():
        for folder in _working_folders():
            if given == Path(folder) or Path(folder) in given.parents:
                return str(given.relative_to(folder)) or "."
    return str(given)


def shown_text(text: str) -> str:
    """``text`` with every absolute path under the current folder written relative to it (the
    current folder itself as ``.``): descriptions and command lines name paths inside them."""
    for folder in _working_folders():
        if folder != os.sep:
            text = re.sub(re.escape(folder) + r"(?:/|(?![\w.-]))", lambda m: "" if m.group().endswith("/") else ".", text)
    return text


def shown_settings(value: Any) -> Any:
    """Settings with :func:`shown_text` applied to every string inside them."""
    if isinstance(value, dict):
        return {key: shown_settings(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [shown_settings(item) for item in value]
    return shown_text(value) if isinstance(value, str) else value


def sensitivity_table(analyses: Sequence[CheckpointAnalysis], granularity: str) -> pd.DataFrame:
    """Every checkpoint's grouped sensitivities, one row per (checkpoint, normalization, group)."""
    frames = []
    for analysis in analyses:
        for normalize, result in analysis.sensitivities.items():
            frame = result.table(granularity)
            frame.insert(0, "normalization", NORMALIZATION_NAMES[normalize])
            frame.insert(0, "checkpoint", analysis.label)
            frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def sampled_values(result: ParameterSensitivity, sample: int, seed: int) -> pd.DataFrame:
    """Up to ``sample`` per-parameter values with their layer and role, drawn per tensor in proportion to its size."""
    generator = torch.Generator().manual_seed(seed)
    total = sum(v.numel() for v in result.values.values())
    rows = []
    for name, values in result.values.items():
        flat = values.reshape(-1)
        take = min(flat.numel(), max(1, math.ceil(sample * flat.numel() / total)))
        chosen = flat if take == flat.numel() else flat[torch.randperm(flat.numel(), generator=generator)[:take]]
        rows.append(pd.DataFrame({"sensitivity": chosen.double().numpy(), "layer": layer_of(name), "role": role_of(name)}))
    return pd.concat(rows, ignore_index=True)


def mean_by_layer_and_role(result: ParameterSensitivity) -> pd.Series:
    """The exact mean sensitivity of each (layer, role) cell over every parameter in it; parameters
    outside numbered blocks have the role :data:`OUTSIDE_BLOCKS` and their module as the layer."""
    sums: Dict[Tuple[str, str], float] = {}
    counts: Dict[Tuple[str, str], int] = {}
    for name, values in result.values.items():
        key = (layer_of(name), role_of(name) or OUTSIDE_BLOCKS)
        sums[key] = sums.get(key, 0.0) + sum(chunk.double().sum().item() for chunk in values.reshape(-1).split(CHUNK))
        counts[key] = counts.get(key, 0) + values.numel()
    index = pd.MultiIndex.from_tuples(list(sums), names=["layer", "role"])
    return pd.Series([sums[key] / counts[key] for key in sums], index=index, dtype="float64")


def difference_table(analyses: Sequence[CheckpointAnalysis]) -> pd.DataFrame:
    """Each checkpoint after the first against the first: log10(mean sensitivity / the first's mean
    sensitivity) per layer and role (:func:`mean_by_layer_and_role`), for each normalization both
    have. Columns checkpoint, normalization, layer, role, log10_ratio (NaN where a mean is 0 or the
    cell exists in one checkpoint only). Empty for a single checkpoint."""
    rows = []
    first = analyses[0] if analyses else None
    for analysis in analyses[1:]:
        for normalize, result in analysis.sensitivities.items():
            if normalize not in first.sensitivities:
                continue
            mine, theirs = mean_by_layer_and_role(result), mean_by_layer_and_role(first.sensitivities[normalize])
            cells = mine.index.union(theirs.index, sort=False)
            mine, theirs = mine.reindex(cells), theirs.reindex(cells)
            defined = (mine > 0) & (theirs > 0)
            ratio = (mine.where(defined) / theirs.where(defined)).map(math.log10, na_action="ignore")
            frame = ratio.rename("log10_ratio").reset_index()
            frame.insert(0, "normalization", NORMALIZATION_NAMES[normalize])
            frame.insert(0, "checkpoint", analysis.label)
            rows.append(frame)
    columns = ["checkpoint", "normalization", "layer", "role", "log10_ratio"]
    return pd.concat(rows, ignore_index=True)[columns] if rows else pd.DataFrame(columns=columns)


def _difference_plot(difference: pd.DataFrame, first: str, path: Path) -> Optional[Path]:
    """The difference view: one layer × role heatmap of log10 ratios per checkpoint and normalization."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    finite = difference["log10_ratio"].dropna()
    if finite.empty:
        return None
    limit = max(float(finite.abs().max()), 0.01)  # symmetric around 0, so equal means are white
    panels = difference.groupby(["checkpoint", "normalization"], sort=False)
    layers = sorted(difference["layer"].unique(), key=_natural_key)
    roles = sorted(difference["role"].unique(), key=lambda role: (role == OUTSIDE_BLOCKS, _natural_key(role)))
    panel_height = 0.35 * len(layers) + 3.2
    figure, axes = plt.subplots(len(panels), 1, figsize=(max(8.0, 0.7 * len(roles) + 5), panel_height * len(panels)),
                                squeeze=False)  # fmt: skip
    for axis, ((label, normalization), panel) in zip(axes[:, 0], panels):
        grid = panel.pivot(index="layer", columns="role", values="log10_ratio").reindex(index=layers, columns=roles)
        sns.heatmap(grid.astype(float), ax=axis, cmap="vlag", center=0, vmin=-limit, vmax=limit,
                    annot=grid.size <= 150, fmt=".2f", annot_kws={"fontsize": 7},
                    cbar_kws={"label": f"log10(mean / mean of {first})"})  # fmt: skip
        axis.set_title(f"{label} vs {first}, {normalization}")
        axis.grid(False)  # undefined cells stay blank
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def write_plots(analyses: Sequence[CheckpointAnalysis], folder: Path, seed: int,
                difference: Optional[pd.DataFrame] = None) -> List[Path]:  # fmt: skip
    """Distribution of log-sensitivity, per-layer box plots, a layer × module heatmap and, with a
    ``difference`` table (:func:`difference_table`) of two or more checkpoints, the difference view (PNG)."""
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # fairseq's logging setup would show its debug lines
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    samples = []
    for analysis in analyses:
        for normalize, result in analysis.sensitivities.items():
            frame = sampled_values(result, PLOT_SAMPLE, seed)
            frame["checkpoint"], frame["normalization"] = analysis.label, NORMALIZATION_NAMES[normalize]
            samples.append(frame)
    data = pd.concat(samples, ignore_index=True)
    data = data[data["sensitivity"] > 0].assign(log10_sensitivity=lambda d: d["sensitivity"].apply(math.log10))
    written = []

    grid = sns.displot(data, x="log10_sensitivity", hue="checkpoint", col="normalization", kind="kde",
                       common_norm=False, facet_kws={"sharex": False, "sharey": False}, height=3.6, aspect=1.4)  # fmt: skip
    grid.set_axis_labels("log10 sensitivity |θ·∂L/∂θ|", "density").set_titles("{col_name}")
    written.append(folder / "distribution.png")
    grid.savefig(written[-1], dpi=110)
    plt.close(grid.figure)

    layers = sorted(data["layer"].unique(), key=_natural_key)
    height = max(3.0, 0.28 * len(layers) + 1.5)
    grid = sns.catplot(data, x="log10_sensitivity", y="layer", hue="checkpoint", col="normalization", kind="box",
                       order=layers, showfliers=False, height=height, aspect=1.1, sharex=False)  # fmt: skip
    grid.set_axis_labels("log10 sensitivity", "layer / module").set_titles("{col_name}")
    written.append(folder / "layers.png")
    grid.savefig(written[-1], dpi=110)
    plt.close(grid.figure)

    in_blocks = data.dropna(subset=["role"])
    if not in_blocks.empty:
        panels = in_blocks.groupby(["checkpoint", "normalization"], sort=False)
        panel_height = 0.35 * in_blocks["layer"].nunique() + 3.2
        figure, axes = plt.subplots(len(panels), 1, figsize=(10, panel_height * len(panels)), squeeze=False)
        for axis, ((label, normalization), panel) in zip(axes[:, 0], panels):
            means = panel.groupby(["layer", "role"])["sensitivity"].mean().unstack("role")
            means = means.reindex(sorted(means.index, key=_natural_key)).apply(lambda c: c.map(_safe_log10))
            sns.heatmap(means, ax=axis, cmap="viridis", cbar_kws={"label": "log10 mean sensitivity"})
            axis.set_title(f"{label}, {normalization}")
        figure.tight_layout()
        written.append(folder / "heatmap.png")
        figure.savefig(written[-1], dpi=110)
        plt.close(figure)
    if difference is not None and not difference.empty:
        written += filter(None, [_difference_plot(difference, analyses[0].label, folder / "difference.png")])
    return written


def _safe_log10(value: float) -> float:
    return math.log10(value) if value > 0 else float("nan")


def _natural_key(text: str):
    """Sort "layers.10" after "layers.9"."""
    return [int(part) if part.isdigit() else part for part in text.replace("/", ".").split(".")]


def balance_table(analyses: Sequence[CheckpointAnalysis]) -> pd.DataFrame:
    """Statistics (rows) × checkpoint and normalization (columns)."""
    columns = {}
    for analysis in analyses:
        for normalization, statistics in analysis.balance.items():
            columns[f"{analysis.label} ({normalization})"] = {label: statistics[key] for key, label in SUMMARY_STATISTICS.items()}
    return pd.DataFrame(columns)


def _format(value: object) -> str:
    """Numbers with 4 significant digits (nan and inf spelled out), anything else as text."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if math.isnan(value) or math.isinf(value):
        return str(value)
    return f"{value:.4g}"


def _verdict(values: List[Tuple[str, float]], direction: str) -> Tuple[str, str]:
    """Which checkpoint is more balanced by one statistic of one normalization, as a phrase, and the
    values in checkpoint order. Values equal to the 4 significant digits shown tie."""
    shown = [(label, float(_format(value))) for label, value in values]
    numbers = " vs ".join(_format(value) for _, value in values)
    defined = [(label, value) for label, value in shown if not math.isnan(value)]
    if len(defined) < len(shown):
        undefined = ", ".join(label for label, value in shown if math.isnan(value))
        return f"it is undefined for {undefined} (all sensitivities 0)", numbers
    best = (min if direction == "lower" else max)(value for _, value in defined)
    winners = [label for label, value in defined if value == best]
    if len(winners) == len(defined):
        return f"{' and '.join(winners)} tie" if len(winners) == 2 else "all tie", numbers
    if len(winners) > 1:
        return f"{', '.join(winners[:-1])} and {winners[-1]} tie as the most balanced", numbers
    return f"{winners[0]} is {'more' if len(values) == 2 else 'the most'} balanced", numbers


def balance_summary(analyses: Sequence[CheckpointAnalysis]) -> Optional[str]:
    """One sentence: by each statistic of :data:`MORE_BALANCED_WHEN`, which checkpoint is more balanced
    (per normalization where the normalizations disagree), with the values in checkpoint order.
    None for a single checkpoint."""
    if len(analyses) < 2:
        return None
    normalizations = [n for n in analyses[0].balance if all(n in a.balance for a in analyses)]
    clauses = []
    for key, direction in MORE_BALANCED_WHEN.items():
        verdicts = {n: _verdict([(a.label, a.balance[n][key]) for a in analyses], direction) for n in normalizations}
        name = SUMMARY_STATISTICS[key].replace(" (paper)", "") + (" (higher is more balanced)" if direction == "higher" else "")
        numbers = "; ".join(f"{n} {numbers}" if len(verdicts) > 1 else numbers for n, (_, numbers) in verdicts.items())
        phrases = list(dict.fromkeys(phrase for phrase, _ in verdicts.values()))
        if len(phrases) == 1:
            clauses.append(f"by {name}, {phrases[0]} ({numbers})")
        else:
            clauses.append(f"by {name}, " + ", ".join(f"{n}: {phrase}" for n, (phrase, _) in verdicts.items()) + f" ({numbers})")
    sentence = "; ".join(clauses) + "."
    return sentence[0].upper() + sentence[1:]


def markdown(frame: pd.DataFrame, index_name: str) -> str:
    header = [index_name, *map(str, frame.columns)]
    lines = ["| " + " | ".join(header) + " |", "|---" + "|---:" * len(frame.columns) + "|"]
    for index, row in frame.iterrows():
        lines.append("| " + " | ".join([str(index), *(_format(v) for v in row)]) + " |")
    return "\n".join(lines)


def write_report(
    out: Path,
    analyses: Sequence[CheckpointAnalysis],
    *,
    granularity: str,
    settings: Dict[str, object],
    command: str,
    plots: bool = True,
) -> Path:
    """Write sensitivity.csv, balance.json, the plots, report.md and report.html into the folder ``out``.

    :func:`intradist.analysis.pipeline.analyze` hands it a staging folder (:mod:`intradist.run_folder`).
    """
    sensitivity_table(analyses, granularity).to_csv(out / "sensitivity.csv", index=False, float_format="%.8g")
    by_layer = {}
    for analysis in analyses:
        for normalize, result in analysis.sensitivities.items():
            frame = balance_by_group(result, "layer")
            frame.insert(0, "normalization", NORMALIZATION_NAMES[normalize])
            frame.insert(0, "checkpoint", analysis.label)
            by_layer[(analysis.label, normalize)] = frame
    pd.concat(by_layer.values(), ignore_index=True).to_csv(out / "balance_by_layer.csv", index=False, float_format="%.8g")
    difference = difference_table(analyses)
    if not difference.empty:
        difference.to_csv(out / "difference.csv", index=False, float_format="%.8g")
    summary_sentence = balance_summary(analyses)
    record = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": shown_text(command),
        "settings": shown_settings(settings),
        "versions": versions(),
        "checkpoints": [
            {"label": a.label, "path": shown_path(a.path), "sha256": a.sha256, "framework": a.framework,
             "description": shown_text(a.description),
             "batches": {NORMALIZATION_NAMES[n]: {"count": s.num_batches, "mean_loss": sum(s.batch_losses) / len(s.batch_losses)}
                         for n, s in a.sensitivities.items()},
             "balance": a.balance}
            for a in analyses
        ],
        **({"summary": summary_sentence} if summary_sentence else {}),
    }  # fmt: skip
    (out / "balance.json").write_text(json.dumps(record, indent=2, allow_nan=True) + "\n")
    images = write_plots(analyses, out, int(settings.get("seed", 1)), difference) if plots else []
    summary = balance_table(analyses)
    (out / "report.md").write_text(_markdown_report(analyses, summary, images, record))
    (out / "report.html").write_text(_html_report(analyses, summary, images, record))
    return out


_PLOT_CAPTIONS = {
    "distribution.png": "Distribution of log10 sensitivity over all parameters (a sample of up to 200,000 per checkpoint).",
    "layers.png": "Log10 sensitivity per layer (box: quartiles, whiskers: 1.5 IQR, outliers hidden).",
    "heatmap.png": "Mean sensitivity per layer and module type (log10).",
    "difference.png": "Difference to {first}: log10(mean sensitivity of the checkpoint / mean sensitivity of {first}) "
                      "per layer and module type, over every parameter; red: more sensitive than {first}, blue: less, "
                      "blank: undefined (a mean of 0). Per-cell values: difference.csv.",
}  # fmt: skip


def _caption(image: Path, analyses: Sequence[CheckpointAnalysis]) -> str:
    return _PLOT_CAPTIONS[image.name].format(first=analyses[0].label)


def read_balance(report_dir: Path) -> Dict[str, Dict[str, Dict[str, float]]]:
    """Checkpoint label -> normalization ("raw", "loss-normalized") -> statistics, from a report's ``balance.json``."""
    record = json.loads((Path(report_dir) / "balance.json").read_text())
    return {entry["label"]: entry["balance"] for entry in record["checkpoints"]}


def _checkpoint_lines(analyses: Sequence[CheckpointAnalysis], record: Dict[str, object]) -> List[str]:
    lines = []
    for analysis, entry in zip(analyses, record["checkpoints"]):
        batches = ", ".join(f"{name}: {b['count']} batches, mean loss {b['mean_loss']:.4g}" for name, b in entry["batches"].items())
        lines.append(f"- **{analysis.label}**: `{entry['path']}` — {entry['description']} "
                     f"(sha256 {analysis.sha256[:12]}…); {batches}")  # fmt: skip
    return lines


_DEFINITIONS = (
    "Sensitivity of a parameter: s_j = |θ_j · ∂L/∂θ_j|, the first-order estimate of the change of the "
    "mean loss L when θ_j is set to zero (Xu et al. 2022). Loss-normalized: each batch's term divided "
    "by that batch's loss (the reproduction study's variant). std is the standard deviation of s_j over "
    "all parameters, the paper's balance statistic; lower std, CV, Gini and top shares, and higher "
    "entropy, mean a more even contribution."
)


def _markdown_report(analyses, summary: pd.DataFrame, images: List[Path], record) -> str:
    parts = ["# Parameter sensitivity and contribution balance", "",
             *([f"**{record['summary']}**", ""] if "summary" in record else []),
             f"`{record['command']}`", "", *_checkpoint_lines(analyses, record), "", _DEFINITIONS, "", "## Balance", "",
             markdown(summary, "statistic"), ""]  # fmt: skip
    for image in images:
        parts += [f"![{image.stem}]({image.name})", "", _caption(image, analyses), ""]
    parts += ["Per-group sensitivities: `sensitivity.csv`; per-layer balance: `balance_by_layer.csv`; "
              "provenance (checkpoint hashes, data, versions): `balance.json`.", ""]  # fmt: skip
    return "\n".join(parts)


def _html_report(analyses, summary: pd.DataFrame, images: List[Path], record) -> str:
    escape = html.escape
    rows = "".join(
        "<tr><th>" + escape(str(index)) + "</th>" + "".join(f"<td>{escape(_format(v))}</td>" for v in row) + "</tr>"
        for index, row in summary.iterrows()
    )
    header = "<tr><th>statistic</th>" + "".join(f"<th>{escape(str(c))}</th>" for c in summary.columns) + "</tr>"
    checkpoints = "".join(
        f"<li><b>{escape(a.label)}</b>: <code>{escape(entry['path'])}</code> — {escape(entry['description'])} "
        f"(sha256 {escape(a.sha256[:12])}…)</li>"
        for a, entry in zip(analyses, record["checkpoints"])
    )
    figures = "".join(
        f'<figure><img alt="{escape(image.stem)}" src="data:image/png;base64,'
        f'{base64.b64encode(image.read_bytes()).decode("ascii")}"><figcaption>{escape(_caption(image, analyses))}'
        "</figcaption></figure>"
        for image in images
    )
    verdict = f"<p><b>{escape(record['summary'])}</b></p>" if "summary" in record else ""
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
             "th:first-child{text-align:left}img{max-width:100%}figure{margin:1.5em 0}code{background:#f4f4f4}")  # fmt: skip
    return (
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>Parameter sensitivity and contribution balance</title><style>{style}</style></head><body>"
        f"<h1>Parameter sensitivity and contribution balance</h1>{verdict}<p><code>{escape(record['command'])}</code></p>"
        f"<ul>{checkpoints}</ul><p>{escape(_DEFINITIONS)}</p><h2>Balance</h2><table>{header}{rows}</table>"
        f"{figures}<p>Created {escape(record['created'])}; versions: {escape(json.dumps(record['versions']))}.</p>"
        "</body></html>\n"
    )

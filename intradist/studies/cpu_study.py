"""The CPU study of issue 3: baseline vs intra-distillation on Multi30k De->En, several seeds.

Two comparisons from one set of runs per seed:

* **equal updates**: baseline, intra-distillation with K=2 and K=3, all stopped at N updates;
* **equal wall-clock**: one longer baseline run saves a checkpoint every ``--save-every`` updates;
  for each intra-distillation run, the baseline checkpoint whose training time is closest to
  that run's time is evaluated too. The inverse-sqrt schedule does not depend on the total
  number of updates, so the first N updates of the long run are exactly the N-update baseline.

Every training runs with one thread (``OMP_NUM_THREADS=1``), one at a time, so that times are
comparable. Each evaluation is appended as a JSON line to ``results.jsonl`` (the format
``intradist results translation`` reads); a rerun skips finished trainings and evaluations.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import click

from intradist.errors import UserError
from intradist.recipes.fairseq_runs import USER_DIR, TrainingLog, train
from intradist.paths import REPO_ROOT, corpus_dir
from intradist.recipes.fairseq_runs import training_args
from intradist.results import format_mean_std, markdown_table, read_jsonl
from intradist.prepare.translation import PrepareConfig, prepare, translate_and_score


@dataclass(frozen=True)
class StudyRun:
    """One training of the study: a method, its fairseq flags and its budget."""

    method: str
    passes: int  # 1 for the baseline
    updates: int
    seed: int

    @property
    def name(self) -> str:
        return f"{self.method.replace(' ', '').replace('=', '')}-seed{self.seed}"

    def criterion_args(self, alpha: float) -> List[str]:
        if self.passes == 1:
            return ["--task", "translation", "--criterion", "label_smoothed_cross_entropy"]
        return ["--task", "translation_intra_distillation", "--criterion", "intra_distillation",
                "--num-passes", str(self.passes), "--alpha", str(alpha)]  # fmt: skip


def study_runs(updates: int, passes: Sequence[int], seeds: Sequence[int], baseline_factor: float) -> List[StudyRun]:
    """The trainings of the study, seed by seed: the long baseline first, then each K."""
    baseline_updates = int(math.ceil(updates * baseline_factor))
    runs = []
    for seed in seeds:
        runs.append(StudyRun("baseline", 1, baseline_updates, seed))
        runs.extend(StudyRun(f"intra K={k}", k, updates, seed) for k in passes)
    return runs


def wall_seconds_at(log: TrainingLog, updates: int) -> float:
    """Training wall time (seconds, as fairseq logs it) when the run reached ``updates``."""
    for record in log.inner:
        if int(record["num_updates"]) >= updates:
            return float(record["wall"])
    raise ValueError(f"the log never reached update {updates}")


def nearest_in_time(log: TrainingLog, saved_updates: Sequence[int], seconds: float) -> int:
    """The saved update whose training time is closest to ``seconds`` (the earlier one on a tie)."""
    return min(saved_updates, key=lambda updates: (abs(wall_seconds_at(log, updates) - seconds), updates))


def tokens_until(log: TrainingLog, updates: int) -> float:
    """Target tokens trained on up to ``updates`` (words per batch times updates, per log record)."""
    tokens, previous = 0.0, 0
    for record in log.inner:
        reached = int(record["num_updates"])
        if previous >= updates:
            break
        tokens += float(record["wpb"]) * (min(reached, updates) - previous)
        previous = reached
    return tokens


def read_log(save_dir: Path) -> TrainingLog:
    log = TrainingLog()
    with open(save_dir / "train.log") as handle:
        for line in handle:
            log.add_line(line)
    return log


def checkpoint_at(save_dir: Path, updates: int, final_updates: int) -> Path:
    """The checkpoint a run saved at ``updates`` (``checkpoint_last.pt`` for its last update)."""
    if updates == final_updates:
        return save_dir / "checkpoint_last.pt"
    found = sorted(save_dir.glob(f"checkpoint*_{updates}.pt"))
    if not found:
        raise FileNotFoundError(f"{save_dir}: no checkpoint saved at update {updates}")
    return found[0]


def run_study(
    out: Path,
    updates: int,
    passes: Sequence[int],
    seeds: Sequence[int],
    alpha: float,
    vocab_size: int,
    max_tokens: int,
    save_every: int,
    baseline_factor: float,
    train_lines: Optional[int] = None,
    test_lines: Optional[int] = None,
    threads: int = 1,
) -> List[Dict[str, object]]:
    """Train and evaluate every run of the study; returns the evaluation records."""
    if updates % save_every:
        raise UserError(f"--updates {updates} must be a multiple of --save-every {save_every}")
    os.environ["OMP_NUM_THREADS"] = str(threads)  # inherited by every fairseq subprocess
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.jsonl"
    previous = read_jsonl(results_path) if results_path.exists() else []
    done = {(r["run"], r["updates"], r["comparison"]) for r in previous}
    scored_before = {(r["run"], r["updates"]): r for r in previous}  # a checkpoint is translated once
    data_bin = prepare(corpus_dir("multi30k"), out / "data-bin",
                       PrepareConfig(vocab_size=vocab_size, max_train_lines=train_lines, max_test_lines=test_lines))  # fmt: skip
    runs = study_runs(updates, passes, seeds, baseline_factor)
    logs: Dict[StudyRun, TrainingLog] = {}

    def trained(index: int, run: StudyRun) -> TrainingLog:
        save_dir = out / run.name
        if not (save_dir / "checkpoint_last.pt").is_file():
            click.echo(f"[{index}/{len(runs)}] training {run.method}, seed {run.seed}, {run.updates} updates", err=True)
            args = [*training_args(data_bin, run.updates, max_tokens, run.seed, cpu=True),
                    *run.criterion_args(alpha), "--save-interval-updates", str(save_every),
                    "--no-save-optimizer-state", "--log-interval", str(math.gcd(25, save_every))]  # fmt: skip
            train(args, save_dir, run.name, run.updates)
        return read_log(save_dir)

    def evaluate(run: StudyRun, at_updates: int, comparison: str) -> None:
        if (run.name, at_updates, comparison) in done:
            return
        record = scored_before.get((run.name, at_updates))
        if record is None:
            log = logs[run]
            checkpoint = checkpoint_at(out / run.name, at_updates, run.updates)
            click.echo(f"translating test2016 with {checkpoint}", err=True)
            scored = translate_and_score(data_bin, checkpoint, cpu=True, user_dir=USER_DIR)
            seconds = wall_seconds_at(log, at_updates)
            record = {
                "corpus": "multi30k", "pair": "de-en", "method": run.method, "run": run.name, "seed": run.seed,
                "passes": run.passes, "alpha": alpha if run.passes > 1 else 0.0, "updates": at_updates,
                "train_seconds": seconds, "tokens_per_second": tokens_until(log, at_updates) / seconds,
                "bleu": scored["bleu"], "signature": scored["signature"], "checkpoint": str(checkpoint),
            }  # fmt: skip
            scored_before[(run.name, at_updates)] = record
        record = {**record, "comparison": comparison}
        with open(results_path, "a") as handle:
            handle.write(json.dumps(record) + "\n")
        done.add((run.name, at_updates, comparison))
        click.echo(f"  {run.method} seed {run.seed} @ {at_updates} updates ({comparison}): BLEU {record['bleu']:.2f}", err=True)

    for seed in seeds:  # evaluate each seed as soon as it is trained, so a partial study still reports
        for index, run in enumerate(runs, 1):
            if run.seed == seed:
                logs[run] = trained(index, run)
        baseline = next(r for r in runs if r.seed == seed and r.passes == 1)
        evaluate(baseline, updates, "equal updates")
        for run in (r for r in runs if r.seed == seed and r.passes > 1):
            evaluate(run, updates, "equal updates")
            target = wall_seconds_at(logs[run], run.updates)
            saved = range(save_every, baseline.updates + 1, save_every)
            evaluate(baseline, nearest_in_time(logs[baseline], saved, target), f"equal time as intra K={run.passes}")
        plot_loss_curves(logs, out / "loss_curves.png")
        (out / "results.md").write_text(study_report(read_jsonl(results_path), alpha) + "\n")
    return read_jsonl(results_path)


def study_report(records: List[Dict[str, object]], alpha: float) -> str:
    """Markdown: the equal-updates table, then baseline vs intra-distillation at equal time."""
    equal_updates = [r for r in records if r["comparison"] == "equal updates"]
    methods = sorted({r["method"] for r in equal_updates}, key=lambda m: (m != "baseline", m))
    rows = []
    for method in methods:
        group = sorted((r for r in equal_updates if r["method"] == method), key=lambda r: r["seed"])
        rows.append([method, len(group), group[0]["updates"],
                     format_mean_std([r["train_seconds"] for r in group], 0),
                     format_mean_std([r["tokens_per_second"] for r in group], 0),
                     format_mean_std([r["bleu"] for r in group]),
                     ", ".join(f"{r['bleu']:.2f}" for r in group)])  # fmt: skip
    parts = ["## Equal number of updates", "",
             markdown_table(["method", "seeds", "updates", "train time (s)", "tokens/s", "BLEU", "BLEU per seed"], rows),
             "", f"Intra-distillation: constant α = {alpha:g}, X-divergence, sequential passes.", ""]  # fmt: skip
    rows = []
    for record in sorted((r for r in records if r["comparison"].startswith("equal time")), key=lambda r: (r["comparison"], r["seed"])):
        k = int(record["comparison"].rsplit("=", 1)[1])
        intra = next(r for r in equal_updates if r["seed"] == record["seed"] and r["passes"] == k)
        rows.append([f"K={k}", record["seed"], f"{intra['updates']} upd, {intra['train_seconds']:.0f} s",
                     f"{intra['bleu']:.2f}", f"{record['updates']} upd, {record['train_seconds']:.0f} s",
                     f"{record['bleu']:.2f}", f"{intra['bleu'] - record['bleu']:+.2f}"])  # fmt: skip
    summary = []
    for k in sorted({row[0] for row in rows}):
        deltas = [float(row[6]) for row in rows if row[0] == k]
        summary.append(f"- {k}: intra-distillation minus equal-time baseline, mean over seeds: {format_mean_std(deltas)} BLEU")
    parts += ["## Equal wall-clock time", "",
              markdown_table(["intra", "seed", "intra run", "intra BLEU", "baseline checkpoint", "baseline BLEU", "Δ BLEU"], rows),
              "", *summary, ""]  # fmt: skip
    every = [[r["run"], r["seed"], r["comparison"], r["updates"], f"{r['train_seconds']:.0f}",
              f"{r['tokens_per_second']:.0f}", f"{r['bleu']:.2f}"]
             for r in sorted(records, key=lambda r: (r["seed"], r["passes"], r["updates"]))]  # fmt: skip
    parts += ["## Every evaluation", "",
              markdown_table(["run", "seed", "comparison", "updates", "train time (s)", "tokens/s", "BLEU"], every),
              "", f"sacreBLEU: {records[0]['signature']}", "",
              "Validation loss over updates and over time: `loss_curves.png`."]  # fmt: skip
    return "\n".join(parts)


def plot_loss_curves(logs: Dict[StudyRun, TrainingLog], path: Path) -> None:
    """Validation loss against updates and against wall time, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    points = []
    for run, log in logs.items():
        logged_until = int(log.inner[-1]["num_updates"]) if log.inner else 0
        for record in (r for r in log.valid if int(r["valid_num_updates"]) <= logged_until):
            points.append({"method": run.method, "seed": run.seed, "updates": int(record["valid_num_updates"]),
                           "valid loss (bits/token)": float(record["valid_loss"]),
                           "train time (s)": wall_seconds_at(log, int(record["valid_num_updates"]))})  # fmt: skip
    import pandas as pd

    frame = pd.DataFrame(points)
    figure, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for axis, x in zip(axes, ["updates", "train time (s)"]):
        sns.lineplot(frame, x=x, y="valid loss (bits/token)", hue="method", units="seed", estimator=None, ax=axis, lw=1)
    axes[1].get_legend().remove()
    figure.tight_layout()
    staging = path.with_name(path.stem + ".partial.png")
    figure.savefig(staging, dpi=120)
    plt.close(figure)
    staging.rename(path)


def _int_list(_ctx, _param, value: str) -> List[int]:
    try:
        return [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}")


@click.command("intradist study cpu", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", type=click.Path(path_type=Path), default=REPO_ROOT / "runs" / "cpu_study", show_default=True)
@click.option("--updates", type=click.IntRange(min=1), default=2000, show_default=True,
              help="N: updates of every run in the equal-updates comparison.")  # fmt: skip
@click.option("--passes", default="2,3", show_default=True, callback=_int_list, help="Values of K to run.")
@click.option("--seeds", default="1,2,3", show_default=True, callback=_int_list)
@click.option("--alpha", default=0.3, show_default=True, help="Constant weight of the intra-distillation term.")
@click.option("--vocab-size", type=click.IntRange(min=10), default=1000, show_default=True)
@click.option("--max-tokens", type=click.IntRange(min=1), default=2000, show_default=True)
@click.option("--save-every", type=click.IntRange(min=1), default=250, show_default=True,
              help="Checkpoint (and validation) interval in updates; the equal-time baseline is picked among these.")  # fmt: skip
@click.option("--baseline-factor", type=click.FloatRange(min=1), default=3.75, show_default=True,
              help="The baseline trains this many times N updates, to cover the intra runs' wall time.")  # fmt: skip
@click.option("--train-lines", type=click.IntRange(min=1), default=None, help="Use only the first N training pairs.")
@click.option("--test-lines", type=click.IntRange(min=1), default=None, help="Translate only the first N test sentences.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="Threads per training.")
def main(**options) -> None:
    """Baseline vs intra-distillation (K=2, 3) on Multi30k, several seeds, equal updates and equal time."""
    records = run_study(**options)
    click.echo((options["out"] / "results.md").read_text())
    click.echo(f"{len(records)} evaluations in {options['out'] / 'results.jsonl'}")


if __name__ == "__main__":
    main()

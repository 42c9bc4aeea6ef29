#!/usr/bin/env python
"""Training throughput of this plugin's criterions against fairseq's own, in one run.

Every configuration trains the same small transformer (2+2 layers, d=64, ffn 256, 4 heads,
shared embeddings, dropout 0.3) on the same Multi30k de-en subset with the same seed, hence on
the same batches, each as its own ``fairseq_cli.train`` subprocess:

1. fairseq's ``label_smoothed_cross_entropy`` (label smoothing 0.1): the baseline;
2. ``label_smoothed_kd`` without a teacher (must stay within 2% of the baseline's tokens/s);
3. ``intra_distillation`` with K = 2 and 3 passes, ``--pass-strategy batch`` and ``sequential``
   (alpha 5, constant); its step time must stay within K times the baseline's.

Timing: the child (``benchmarks/criterion_throughput_child.py``) prints a timestamp
(``time.perf_counter``, after a CUDA synchronise on GPU) at the end of each ``Trainer.train_step``;
the timed window runs from the end of update W to the end of update W+N, so it holds N whole
iterations of the training loop (data loading, step, logging). fairseq's own ``wall``/``train_wall``
fields are rounded to whole seconds, too coarse for sub-second updates; the target tokens of each
update are the ``wpb`` field of the ``train_inner`` lines (``--log-interval 1``). Configurations
run interleaved, ``--repeats`` times (the order reversed on every other repeat), and the median is
reported.

Besides that spec measure, the table gives the median wall time of a single update, pooled over
the repeats: since every configuration trains on the same batches it compares like with like,
and a burst of other load on the machine moves it far less than the total.

Each child runs one OpenMP/MKL thread by default (``--threads``): with two threads on a 2-core
machine, any other busy process makes the threads wait for each other at every parallel region
and updates become up to ~60x slower, which no amount of repeating averages out.

Memory: on CPU the peak resident set size of the child process (``os.wait4`` rusage, Linux
``ru_maxrss``), with in brackets its increase during training over the peak reached before the
first update (model, data and fairseq itself). On CUDA ``torch.cuda.max_memory_allocated``.

    python benchmarks/criterion_throughput.py                  # CPU, defaults (~4-5 min)
    python benchmarks/criterion_throughput.py --device cuda --updates 200 --out bench.json
    python benchmarks/criterion_throughput.py --only intra-k2-batch --only intra-k2-sequential --repeats 3
"""

from __future__ import annotations

import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import click

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from intradist.errors import UserError  # noqa: E402
from intradist.recipes.fairseq_runs import transformer_args  # noqa: E402
from intradist.paths import corpus_dir  # noqa: E402
from intradist.prepare.translation import REQUIRED_BATCH_SIZE_MULTIPLE, PrepareConfig, prepare  # noqa: E402

TRAIN_INNER = re.compile(r"(?:\| train_inner \| |:train_inner:)(\{.*\})\s*$")
KD_TARGET = 0.98
"""Spec: ``label_smoothed_kd`` without a teacher keeps at least this fraction of fairseq's tokens/s."""

#: Each child: fairseq-train with every update timed (benchmarks/criterion_throughput_child.py), run from REPO_ROOT.
CHILD = [sys.executable, "-m", "benchmarks.criterion_throughput_child"]


@dataclass(frozen=True)
class Config:
    key: str
    name: str
    criterion: str
    passes: int
    strategy: str
    args: Sequence[str]

    @property
    def ours(self) -> bool:
        return self.criterion != "label_smoothed_cross_entropy"


BASELINE = Config("baseline", "fairseq label_smoothed_cross_entropy", "label_smoothed_cross_entropy", 1, "-", ())
CONFIGS: List[Config] = [
    BASELINE,
    Config("kd", "label_smoothed_kd (no teacher)", "label_smoothed_kd", 1, "-", ()),
] + [
    Config(
        f"intra-k{k}-{strategy}",
        f"intra_distillation K={k} {strategy}",
        "intra_distillation",
        k,
        strategy,
        ("--num-passes", str(k), "--alpha", "5", "--adaptive-alpha", "0", "--pass-strategy", strategy),
    )
    for k in (2, 3)
    for strategy in ("batch", "sequential")
]


def model_args(data: Path, max_tokens: int, max_update: int, seed: int, device: str, save_dir: Path) -> List[str]:
    args = [
        str(data),
        *transformer_args(layers=2, embed_dim=64, ffn_dim=256, heads=4),
        "--dropout", "0.3", "--label-smoothing", "0.1",
        "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--lr", "5e-4",
        "--lr-scheduler", "inverse_sqrt", "--warmup-updates", "4000",
        "--max-tokens", str(max_tokens), "--max-update", str(max_update), "--seed", str(seed),
        "--disable-validation", "--no-save", "--save-dir", str(save_dir),
        "--log-format", "json", "--log-interval", "1", "--num-workers", "0",
        *REQUIRED_BATCH_SIZE_MULTIPLE,  # the project's convention for every fairseq command
    ]  # fmt: skip
    if device == "cpu":
        args.append("--cpu")
    return args


def run_one(config: Config, common: List[str], env: Dict[str, str], log_path: Path) -> dict:
    """Train one configuration in a child process; return its per-update times, tokens and memory."""
    if config.ours:
        task = ["--user-dir", str(REPO_ROOT / "user_dir"), "--task", "translation_intra_distillation"]
    else:
        task = ["--task", "translation"]
    command = CHILD + common + task + ["--criterion", config.criterion] + list(config.args)
    steps: Dict[int, float] = {}
    cpu: Dict[int, float] = {}
    tokens: Dict[int, float] = {}
    epochs: Dict[int, int] = {}
    info: dict = {}
    cuda_peak: Optional[int] = None
    with open(log_path, "w", encoding="utf-8") as log:
        log.write("# " + shlex.join(command) + "\n")
        process = subprocess.Popen(
            command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
        )
        assert process.stdout is not None
        for line in process.stdout:
            log.write(line)
            if line.startswith("BENCH_STEP "):
                _, update, stamp, cpu_stamp = line.split()
                steps[int(update)], cpu[int(update)] = float(stamp), float(cpu_stamp)
            elif line.startswith("BENCH_ENV "):
                info = json.loads(line[len("BENCH_ENV ") :])
            elif line.startswith("BENCH_CUDA_PEAK "):
                cuda_peak = int(line.split()[1])
            elif TRAIN_INNER.search(line):
                stats = json.loads(TRAIN_INNER.search(line).group(1))
                update = int(float(stats["num_updates"]))
                tokens[update] = float(stats["wpb"])
                epochs[update] = int(float(stats["epoch"]))
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        tail = "".join(log_path.read_text(encoding="utf-8").splitlines(keepends=True)[-25:])
        raise click.ClickException(f"{config.name}: fairseq-train exited with {process.returncode} ({log_path}):\n{tail}")
    return {
        "fairseq_train": shlex.join(["fairseq-train"] + command[len(CHILD) :]),
        "steps": steps,
        "cpu": cpu,
        "tokens": tokens,
        "epochs": epochs,
        "env": info,
        "peak_rss_kib": usage.ru_maxrss,
        "pre_train_maxrss_kib": info.get("pre_train_maxrss_kib"),
        "cuda_peak_bytes": cuda_peak,
    }


def measure(raw: dict, warmup: int, updates: int) -> dict:
    """Tokens/s and s/update over updates warmup+1 .. warmup+updates."""
    first, last = warmup, warmup + updates
    window = range(first + 1, last + 1)
    missing = [u for u in [first, *window] if u not in raw["steps"]] + [u for u in window if u not in raw["tokens"]]
    if missing:
        raise click.ClickException(f"updates {sorted(set(missing))[:5]} were not logged; see the child's log")
    start = raw["steps"][first]
    seconds = raw["steps"][last] - start
    target_tokens = sum(raw["tokens"][u] for u in window)
    return {
        "seconds": seconds,
        "target_tokens": target_tokens,
        "tokens_per_s": target_tokens / seconds,
        "s_per_update": seconds / updates,
        "cpu_s_per_update": (raw["cpu"][last] - raw["cpu"][first]) / updates,
        "update_seconds": [raw["steps"][u] - raw["steps"][u - 1] for u in window],
        "epochs": sorted({raw["epochs"][u] for u in window}),
    }


def fmt_mem(row: dict, device: str) -> str:
    if device == "cuda":
        return "n/a" if row["cuda_peak_mib"] is None else f"{row['cuda_peak_mib']:.0f}"
    delta = row["rss_train_increase_mib"]
    return f"{row['peak_rss_mib']:.0f} (+{delta:.0f})" if delta is not None else f"{row['peak_rss_mib']:.0f}"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


@click.command(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs/benchmarks"),
              help="cache folder: the prepared data-bin (reused) and one log per child run")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu")
@click.option("--warmup", "-W", type=click.IntRange(min=1), default=5, help="updates run before timing starts")
@click.option("--updates", "-N", type=click.IntRange(min=1), default=50, help="timed updates per run")
@click.option("--repeats", type=click.IntRange(min=1), default=2, help="runs per configuration; the median is reported")
@click.option("--max-tokens", type=click.IntRange(min=1), default=2000)
@click.option("--train-lines", type=click.IntRange(min=100), default=10000,
              help="Multi30k training lines to prepare; enough that W+N updates fit in one epoch")
@click.option("--threads", type=click.IntRange(min=0), default=1,
              help="OMP/MKL threads of each child, 0 for torch's own choice (one per core). One by default: with "
                   "two OpenMP threads on a 2-core machine, any other busy process makes updates up to ~60x slower")
@click.option("--seed", type=int, default=1)
@click.option("--only", multiple=True, type=click.Choice([c.key for c in CONFIGS[1:]]),
              help="run only these configurations (repeatable); the baseline always runs")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="also write the rows, versions, device and command as JSON")
def main(work_dir, device, warmup, updates, repeats, max_tokens, train_lines, threads, seed, only, out):
    """Tokens/s, s/update and peak memory of fairseq's label-smoothed CE, label_smoothed_kd and
    intra_distillation (K=2,3; batch and sequential passes) on a Multi30k subset, with PASS/FAIL
    for the spec's two speed targets."""
    began = time.perf_counter()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    load_start = os.getloadavg()
    if load_start[0] > 0.5 * (os.cpu_count() or 1):
        click.echo(f"warning: load average {load_start[0]:.2f} on {os.cpu_count()} cores: other processes are "
                   f"running, wall-clock timings will be noisy", err=True)
    work_dir = work_dir.resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    data_config = PrepareConfig(vocab_size=1000, max_train_lines=train_lines, max_test_lines=200)
    try:
        data = prepare(corpus_dir("multi30k"), work_dir / f"multi30k-de-en-v1000-train{train_lines}", data_config)
    except UserError as error:
        raise click.ClickException(str(error)) from error
    logs = work_dir / "logs"
    logs.mkdir(exist_ok=True)

    configs = [BASELINE] + [c for c in CONFIGS[1:] if not only or c.key in only]
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "PYTHONUNBUFFERED": "1"}
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    common = model_args(data, max_tokens, warmup + updates, seed, device, work_dir / "no-checkpoints")

    results: Dict[str, List[dict]] = {c.name: [] for c in configs}
    child_env: dict = {}
    commands: Dict[str, str] = {}
    total = repeats * len(configs)
    for repeat in range(repeats):
        order = configs if repeat % 2 == 0 else list(reversed(configs))
        for config in order:
            raw = run_one(config, common, env, logs / f"{config.key}.r{repeat + 1}.log")
            child_env = raw["env"] or child_env
            if device == "cuda" and not raw["env"].get("cuda_device"):
                raise click.ClickException("--device cuda, but fairseq-train found no CUDA device")
            commands[config.name] = raw["fairseq_train"]
            timing = measure(raw, warmup, updates)
            if len(timing["epochs"]) > 1:
                click.echo(f"  warning: the timed updates of {config.name} span epochs {timing['epochs']}; "
                           f"raise --train-lines", err=True)
            pre = raw["pre_train_maxrss_kib"]
            results[config.name].append({
                **timing,
                "peak_rss_mib": raw["peak_rss_kib"] / 1024,
                "rss_train_increase_mib": None if pre is None else (raw["peak_rss_kib"] - pre) / 1024,
                "cuda_peak_mib": None if raw["cuda_peak_bytes"] is None else raw["cuda_peak_bytes"] / 2**20,
            })
            done = sum(len(v) for v in results.values())
            click.echo(f"[{done}/{total}] {config.name}: {timing['tokens_per_s']:.0f} tok/s, "
                       f"{timing['s_per_update']:.4f} s/update", err=True)

    def median(name: str, key: str) -> Optional[float]:
        values = [r[key] for r in results[name] if r[key] is not None]
        return statistics.median(values) if values else None

    def median_update(name: str) -> float:
        """Median wall time of one update, pooled over the repeats: robust to bursts of other load."""
        return statistics.median(t for r in results[name] for t in r["update_seconds"])

    base_tps, base_spu = median(BASELINE.name, "tokens_per_s"), median(BASELINE.name, "s_per_update")
    base_median = median_update(BASELINE.name)
    rows = []
    for config in configs:
        tps_values = [r["tokens_per_s"] for r in results[config.name]]
        tps, spu = median(config.name, "tokens_per_s"), median(config.name, "s_per_update")
        rows.append({
            "config": config.name,
            "key": config.key,
            "criterion": config.criterion,
            "K": config.passes,
            "strategy": config.strategy,
            "tokens_per_s": tps,
            "s_per_update": spu,
            "median_s_per_update": median_update(config.name),
            "cpu_s_per_update": median(config.name, "cpu_s_per_update"),
            "peak_rss_mib": median(config.name, "peak_rss_mib"),
            "rss_train_increase_mib": median(config.name, "rss_train_increase_mib"),
            "cuda_peak_mib": median(config.name, "cuda_peak_mib"),
            "ratio_tokens_per_s": tps / base_tps,
            "step_ratio_over_K": spu / base_spu / config.passes,
            "median_step_ratio_over_K": median_update(config.name) / base_median / config.passes,
            "spread": (max(tps_values) - min(tps_values)) / tps,
            "fairseq_train": commands[config.name],
            "runs": results[config.name],
        })

    memory_header = "peak CUDA alloc MiB" if device == "cuda" else "peak RSS MiB (+in training)"
    lines = [
        f"| config | K | strategy | tokens/s | s/update | median s/update | {memory_header} "
        f"| tokens/s vs baseline | step time / baseline / K | spread |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['config']} | {row['K']} | {row['strategy']} | {row['tokens_per_s']:.0f} "
            f"| {row['s_per_update']:.4f} | {row['median_s_per_update']:.4f} | {fmt_mem(row, device)} "
            f"| {row['ratio_tokens_per_s']:.3f} | {row['step_ratio_over_K']:.3f} | {100 * row['spread']:.1f}% |"
        )

    targets = []
    for row in rows:
        if row["criterion"] == "label_smoothed_kd":
            targets.append({
                "target": f"label_smoothed_kd without teacher >= {KD_TARGET} x fairseq tokens/s",
                "config": row["config"],
                "value": row["ratio_tokens_per_s"],
                "pass": row["ratio_tokens_per_s"] >= KD_TARGET,
                "value_from_median_update": base_median / row["median_s_per_update"],
            })
        elif row["criterion"] == "intra_distillation":
            targets.append({
                "target": f"intra step time <= K x baseline (K={row['K']}, {row['strategy']})",
                "config": row["config"],
                "value": row["step_ratio_over_K"],
                "pass": row["step_ratio_over_K"] <= 1.0,
                "value_from_median_update": row["median_step_ratio_over_K"],
            })

    wall = time.perf_counter() - began
    load_end = os.getloadavg()
    if device == "cuda":
        device_text = f"cuda: {child_env.get('cuda_device')}"
    else:
        device_text = f"cpu: {cpu_model()}, {os.cpu_count()} logical cores, torch threads {child_env.get('torch_threads')}"
    click.echo()
    click.echo(f"Criterion throughput: Multi30k de-en ({train_lines} training lines, spm 1000), transformer 2+2 "
               f"layers d=64 ffn 256 4 heads, shared embeddings, dropout 0.3, --max-tokens {max_tokens}, seed {seed}")
    click.echo(f"{device_text}; torch {child_env.get('torch')}, fairseq {child_env.get('fairseq')}; "
               f"W={warmup} warm-up + N={updates} timed updates, median of {repeats} interleaved repeats")
    click.echo()
    click.echo("\n".join(lines))
    click.echo()
    if device == "cuda":
        click.echo("Memory: torch.cuda.max_memory_allocated of the child, in MiB.")
    else:
        click.echo("Memory: peak resident set size of the child process (ru_maxrss), in MiB; in brackets its increase "
                   "during training over the peak reached before the first update.")
    click.echo("tokens/s: target tokens (wpb) of the timed updates / wall time from the end of update W to the end "
               "of update W+N; s/update: that wall time / N; both the median over the repeats. median s/update: the "
               "median wall time of a single timed update, pooled over the repeats (every configuration trains on "
               "the same batches), robust to bursts of other load on the machine. spread: (max - min) / median "
               "of tokens/s over the repeats.")
    click.echo()
    for target in targets:
        click.echo(f"{'PASS' if target['pass'] else 'FAIL'}  {target['target']}: {target['value']:.3f} "
                   f"(from median update times: {target['value_from_median_update']:.3f})")
    click.echo()
    click.echo(f"load average 1 min: {load_start[0]:.2f} at start, {load_end[0]:.2f} at end; "
               f"wall time {wall:.0f} s; logs in {logs}")

    if out is not None:
        report = {
            "command": shlex.join([sys.executable] + sys.argv),
            "started": started,
            "wall_s": wall,
            "torch": child_env.get("torch"),
            "fairseq": child_env.get("fairseq"),
            "python": child_env.get("python"),
            "device": device_text,
            "load_average_1min": {"start": load_start[0], "end": load_end[0]},
            "settings": {
                "warmup": warmup, "updates": updates, "repeats": repeats, "max_tokens": max_tokens,
                "train_lines": train_lines, "threads": threads, "seed": seed, "data": str(data),
                "fairseq_args": common,
            },
            "memory": "cuda max_memory_allocated" if device == "cuda" else "child peak RSS (ru_maxrss)",
            "rows": rows,
            "targets": targets,
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        click.echo(f"wrote {out}")


if __name__ == "__main__":
    main()

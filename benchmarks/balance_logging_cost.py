"""What ``--log-balance-every N`` costs: ``intradist train vision`` with and without it, same seed, in one run.

Each configuration trains the same model on the same batches in its own process (``intradist
train vision``, one OpenMP thread), interleaved over ``--repeats`` (the order reversed every other
repeat); the training loop's seconds (``train_seconds`` of ``metrics.json``) are compared by their
medians. Target (printed as PASS/FAIL): at N = 100 the logging adds at most 5 % to training time.
The runs must also end with the same scores (logging only reads the gradient) and hold U / N records.

The cost of one record grows with the parameters (|θ·g| of each, one sort on the CPU), the cost of
an update with the parameters times the batch; so the script also times one record alone, for
the model trained here and for the size of MiniLM (22.7 M parameters), to extrapolate to a model
whose updates are faster than this CPU's: overhead ≈ record seconds / (N × update seconds).

    .venv/bin/python benchmarks/balance_logging_cost.py [--updates 400] [--every 100] [--repeats 3] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from intradist.live_balance import balance_record, read_balance_log  # noqa: E402
from intradist.trainers.vision_models import build_model  # noqa: E402


def train_seconds(folder: Path, updates: int, every: int, threads: int, extra: List[str]) -> Dict[str, float]:
    """One ``intradist train vision`` run in its own process; its loop seconds, scores and balance records."""
    command = [sys.executable, "-m", "intradist", "train", "vision", "--data", "digits", "--max-steps", str(updates),
               "--epochs", "100000", "--seed", "1", "--device", "cpu", "--out", str(folder), *extra]  # fmt: skip
    if every:
        command += ["--log-balance-every", str(every)]
    environment = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    subprocess.run(command, check=True, capture_output=True, text=True, env=environment)
    metrics = json.loads((folder / "metrics.json").read_text())
    records = len(read_balance_log(folder)) if every else 0
    return {"seconds": metrics["train_seconds"], "test_nll": metrics["test_nll"], "records": records}


def record_seconds(parameters: List[torch.nn.Parameter], repeats: int = 3) -> float:
    """The median seconds of one :func:`balance_record` of ``parameters`` (their gradients drawn at random)."""
    for parameter in parameters:
        parameter.grad = torch.randn_like(parameter)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        balance_record(1, parameters)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--updates", type=int, default=400, help="Updates per run.")
    parser.add_argument("--every", type=int, default=100, help="N of --log-balance-every.")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="OpenMP threads of each run.")
    parser.add_argument("--batch-size", type=int, default=60)
    parser.add_argument("--image-size", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None, help="Also write the measurements as JSON.")
    args = parser.parse_args()
    extra = ["--batch-size", str(args.batch_size), "--image-size", str(args.image_size)]
    load = os.getloadavg()[0]
    runs: Dict[int, List[Dict[str, float]]] = {0: [], args.every: []}
    with tempfile.TemporaryDirectory() as work:
        for repeat in range(args.repeats):
            order = [0, args.every] if repeat % 2 == 0 else [args.every, 0]
            for every in order:
                folder = Path(work) / f"every{every}-repeat{repeat}"
                runs[every].append(train_seconds(folder, args.updates, every, args.threads, extra))
                print(f"repeat {repeat + 1}, --log-balance-every {every or 'off'}: "
                      f"{runs[every][-1]['seconds']:.2f} s", flush=True)  # fmt: skip
    plain = statistics.median(run["seconds"] for run in runs[0])
    logged = statistics.median(run["seconds"] for run in runs[args.every])
    ratios = [on["seconds"] / off["seconds"] for on, off in zip(runs[args.every], runs[0])]
    ratio = statistics.median(ratios)
    torch.set_num_threads(args.threads)
    model = build_model("resnet20", 10)
    small = record_seconds(list(model.parameters()))
    minilm_size = record_seconds([torch.nn.Parameter(torch.randn(22_713_986))])
    same = len({run["test_nll"] for every in runs for run in runs[every]}) == 1
    counts = {run["records"] for run in runs[args.every]}
    print(f"\nresnet20 on the digits, {args.updates} updates of {args.batch_size} images at {args.image_size}x"
          f"{args.image_size}, {args.threads} thread(s), medians of {args.repeats}:")  # fmt: skip
    print(f"  without logging         {plain:.2f} s ({1000 * plain / args.updates:.1f} ms/update)")
    print(f"  --log-balance-every {args.every:<4} {logged:.2f} s; ratio per repeat "
          f"{', '.join(f'{r:.3f}' for r in ratios)}: median x{ratio:.3f} ({100 * (ratio - 1):+.1f} %)")  # fmt: skip
    expected = args.updates // args.every * small / plain
    print(f"  one record alone: {1000 * small:.1f} ms for resnet20 ({sum(p.numel() for p in model.parameters()):,} "
          f"parameters; {100 * expected:+.1f} % of this training at N = {args.every}), {minilm_size:.2f} s for "
          f"22.7 M parameters (MiniLM)")  # fmt: skip
    print(f"  same scores with and without logging: {same}; records per logged run: {sorted(counts)}")
    print(f"  load average: {load:.2f} at the start, {os.getloadavg()[0]:.2f} at the end")
    verdict = "PASS" if ratio <= 1.05 and same and counts == {args.updates // args.every} else "FAIL"
    print(f"{verdict}: at N = {args.every} the logging adds {100 * (ratio - 1):.1f} % (target <= 5 %)")
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({
            "runs": {str(every): values for every, values in runs.items()}, "ratios": ratios, "ratio": ratio,
            "record_seconds": {"resnet20": small, "22.7M": minilm_size}, "settings": vars(args) | {"out": str(args.out)},
            "torch": torch.__version__, "machine": platform.processor() or platform.machine(),
            "command": " ".join(sys.argv)}, indent=2) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()

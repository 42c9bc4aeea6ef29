"""Rounds of self-distillation: round 0 is the baseline, round r + 1 learns from round r.

Each round trains the same architecture on the same data for the same number of updates with
the ``self_distillation`` criterion, taught by the previous round's best checkpoint; every
round's checkpoint is translated and scored. Writes ``rounds.json`` and ``rounds.md``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Sequence

import click

from intradist.errors import UserError
from intradist.recipes.fairseq_runs import USER_DIR, train
from intradist.recipes.fairseq_runs import training_args
from intradist.prepare.translation import translate_and_score
from intradist.settings import DistillationSettings, settings_from


def run_rounds(
    data_bin: Path,
    out: Path,
    rounds: int,
    updates: int,
    distillation: DistillationSettings,
    cpu: bool,
    max_tokens: int = 2000,
    fairseq_args: Sequence[str] = (),
) -> List[Dict[str, object]]:
    """Train round 0 (``label_smoothed_cross_entropy``) and ``rounds`` self-distillation rounds.

    Each round after the first learns from the one before with ``distillation``'s KD weight and temperature.
    """
    if not (data_bin / "prepare.json").is_file():
        raise UserError(f"{data_bin}: not a data-bin made by intradist prepare translation")
    if rounds < 1:
        raise UserError(f"--rounds must be at least 1, got {rounds}")
    common = [*training_args(data_bin, updates, max_tokens, seed=1, cpu=cpu), *fairseq_args]
    results = []
    teacher = None
    for round_number in range(rounds + 1):
        if teacher is None:
            criterion = ["--criterion", "label_smoothed_cross_entropy"]
        else:
            criterion = ["--criterion", "self_distillation", "--teacher-path", str(teacher),
                         "--kd-weight", str(distillation.kd_weight), "--kd-temperature", str(distillation.kd_temperature)]  # fmt: skip
        save_dir = out / f"round{round_number}"
        train([*common, *criterion], save_dir, f"round {round_number}", updates)
        checkpoint = save_dir / "checkpoint_best.pt"
        scored = translate_and_score(data_bin, checkpoint, cpu=cpu, user_dir=USER_DIR)
        results.append({"round": round_number, "teacher": str(teacher) if teacher else None,
                        "checkpoint": str(checkpoint), "bleu": scored["bleu"], "signature": scored["signature"]})  # fmt: skip
        click.echo(f"round {round_number}: BLEU {scored['bleu']:.2f}", err=True)
        teacher = checkpoint
    (out / "rounds.json").write_text(json.dumps(results, indent=2) + "\n")
    table = ["| round | teacher | BLEU |", "|---:|---|---:|"]
    table += [f"| {r['round']} | {'round ' + str(r['round'] - 1) if r['teacher'] else '—'} | {r['bleu']:.2f} |" for r in results]
    (out / "rounds.md").write_text("\n".join(table) + f"\n\nsacreBLEU: {results[0]['signature']}\n")
    return results


@click.command("intradist train self-distill",
               context_settings={"help_option_names": ["-h", "--help"], "ignore_unknown_options": True})
@click.argument("data_bin", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder for the rounds' checkpoints.")
@click.option("--rounds", default=2, show_default=True, help="Self-distillation rounds after the baseline.")
@click.option("--updates", default=1500, show_default=True, help="Training updates per round.")
@click.option("--kd-weight", default=0.5, show_default=True, help="beta of the KD term.")
@click.option("--kd-temperature", default=1.0, show_default=True)
@click.option("--max-tokens", default=2000, show_default=True, help="Tokens per batch.")
@click.option("--cpu", is_flag=True, help="Train and translate on the CPU even when a GPU is present.")
@click.argument("fairseq_args", nargs=-1, type=click.UNPROCESSED)
def main(data_bin: Path, out: Path, rounds: int, updates: int, max_tokens: int, cpu: bool, fairseq_args: Sequence[str],
         **kd_switches: float) -> None:  # fmt: skip
    """Self-distillation rounds on DATA_BIN; extra FAIRSEQ_ARGS (after --) go to every fairseq-train."""
    results = run_rounds(data_bin, out, rounds, updates, settings_from(kd_switches), cpu, max_tokens, fairseq_args)
    click.echo((out / "rounds.md").read_text())
    click.echo(f"{len(results)} rounds written to {out / 'rounds.json'}")


if __name__ == "__main__":
    main()

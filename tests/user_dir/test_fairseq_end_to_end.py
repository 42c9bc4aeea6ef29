"""The plugin through fairseq's own commands on real Multi30k data: train, resume, generate, score."""

from __future__ import annotations

import math
import socket
import subprocess
import sys

import pytest

from intradist.recipes.fairseq_runs import USER_DIR, TrainingLog, environment
from intradist.prepare.translation import translate_and_score
from tests.conftest import TINY_MODEL, run_fairseq_train

#: fairseq's stock translation task: the criterion records the update number itself (the design's command line)
INTRA = ["--task", "translation", "--criterion", "intra_distillation", "--num-passes", "2"]


def paper_alpha(t: float, n: float, alpha: float, p: float, q: float) -> float:
    """The paper's schedule written out independently of intradist.losses."""
    if t >= n / p:
        return alpha
    gamma = math.log(1 / alpha) / math.log(p / q)
    return alpha * (p * t / n) ** gamma


@pytest.mark.parametrize(
    "criterion_args",
    [
        pytest.param(INTRA + ["--adaptive-alpha"], id="intra_distillation"),
        pytest.param(INTRA + ["--pass-strategy", "batch", "--divergence", "js", "--update-freq", "2"],
                     id="intra_batch_js_update_freq"),  # fmt: skip
        pytest.param(["--criterion", "label_smoothed_kd"], id="label_smoothed_kd_without_teacher"),
        pytest.param(["--criterion", "label_smoothed_kd", "--teacher-path", "{teacher}"], id="label_smoothed_kd"),
        pytest.param(["--criterion", "self_distillation", "--teacher-path", "{teacher}"], id="self_distillation"),
        pytest.param(INTRA + ["--teacher-path", "{teacher}", "--kd-weight", "0.3"], id="intra_with_teacher"),
    ],
)
def test_criterion_trains_and_its_checkpoint_translates(criterion_args, tiny_data_bin, teacher_checkpoint, tmp_path):
    args = [a.format(teacher=teacher_checkpoint) for a in criterion_args]
    _, log = run_fairseq_train(tiny_data_bin, tmp_path, [*args, "--max-update", "12"])
    assert log.num_updates == 12
    losses = [float(record["loss"]) for record in log.inner]
    assert all(math.isfinite(value) for value in losses)
    if "intra_distillation" in args:
        assert all(float(record["intra_distillation_loss"]) > 0 for record in log.inner)
    if "--teacher-path" in args:
        assert all(float(record["kd_loss"]) > 0 for record in log.inner)
    scored = translate_and_score(
        tiny_data_bin, tmp_path / "checkpoint_last.pt", cpu=True, user_dir=USER_DIR, extra_args=["--max-len-b", "10"]
    )
    assert len(scored["hypotheses"]) == 20  # every test sentence translated
    assert 0.0 <= scored["bleu"] <= 100.0
    assert scored["signature"].startswith("nrefs:1|")


def test_alpha_follows_the_adaptive_schedule_during_fairseq_train(tiny_data_bin, tmp_path):
    n, alpha, p, q = 40, 5.0, 5.0, 10.0
    _, log = run_fairseq_train(
        tiny_data_bin, tmp_path, [*INTRA, "--adaptive-alpha", "--alpha", "5", "--alpha-p", "5", "--alpha-q", "10",
                                  "--max-update", str(n)],
    )  # fmt: skip
    logged = {int(record["num_updates"]): float(record["alpha"]) for record in log.inner}
    assert sorted(logged) == list(range(1, n + 1))
    for update, value in logged.items():
        # the record after update u was computed in train_step(update_num = u - 1)
        assert value == pytest.approx(paper_alpha(update - 1, n, alpha, p, q), abs=1e-3)
    assert logged[1] == 0.0 and logged[n] == alpha
    assert logged[int(n / q) + 1] == pytest.approx(1.0, abs=1e-3)


def test_resumed_run_has_the_same_alpha_at_every_update(tiny_data_bin, tmp_path):
    flags = [*INTRA, "--adaptive-alpha", "--max-update", "30", "--save-interval-updates", "10"]
    _, uninterrupted = run_fairseq_train(tiny_data_bin, tmp_path / "straight", flags)

    save_dir = tmp_path / "killed"
    command = [sys.executable, "-m", "fairseq_cli.train", str(tiny_data_bin), "--user-dir", str(USER_DIR),
               *TINY_MODEL, "--save-dir", str(save_dir), *flags]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment())
    for line in process.stdout:
        if "Saved checkpoint" in line and "@ 10 updates" in line:
            process.kill()
            break
    process.wait()
    assert process.returncode != 0, "the first run should have been killed at update 10"

    _, resumed = run_fairseq_train(tiny_data_bin, save_dir, flags)  # picks up checkpoint_last.pt
    resumed_alpha = {int(r["num_updates"]): r["alpha"] for r in resumed.inner}
    straight_alpha = {int(r["num_updates"]): r["alpha"] for r in uninterrupted.inner}
    assert min(resumed_alpha) == 11
    assert resumed_alpha == {u: a for u, a in straight_alpha.items() if u > 10}


def test_original_code_flags_train_with_intra_distillation(tiny_data_bin, tmp_path):
    legacy = ["--task", "translation_intra_distillation", "--criterion", "label_smoothed_cross_entropy",
              "--num-iter", "2", "--alpha", "5", "--adaptive-alpha", "1", "--temperature-p", "5",
              "--temperature-q", "10", "--max-updates-train", "20", "--div", "X", "--max-update", "10"]  # fmt: skip
    _, log = run_fairseq_train(tiny_data_bin, tmp_path, legacy)
    alphas = [float(r["alpha"]) for r in log.inner]
    assert alphas == pytest.approx([paper_alpha(u, 20, 5, 5, 10) for u in range(10)], abs=1e-3)
    assert all(float(r["intra_distillation_loss"]) > 0 for r in log.inner)


@pytest.mark.parametrize(
    "flags, message",
    [
        (INTRA[:-1] + ["1"], "--num-passes must be at least 2"),
        (INTRA + ["--alpha", "-1"], "--alpha must be non-negative"),
        (INTRA + ["--adaptive-alpha", "--alpha-p", "10", "--alpha-q", "5"], "0 < p < q"),
        (["--criterion", "self_distillation"], "needs --teacher-path"),
        (["--criterion", "label_smoothed_kd", "--teacher-path", "/nonexistent/teacher.pt"], "no such checkpoint"),
        (INTRA + ["--divergence", "kl"], "invalid choice"),
    ],
)
def test_bad_configuration_fails_before_training_with_one_line(flags, message, tiny_data_bin, tmp_path):
    completed, log = run_fairseq_train(tiny_data_bin, tmp_path, [*flags, "--max-update", "5"], check=False)
    assert completed.returncode != 0
    assert log.num_updates == 0
    assert message in completed.stderr
    assert "Traceback" not in completed.stderr


def free_loopback_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def train_two_processes(data_bin, save_dir, flags):
    """Two CPU ranks over gloo on loopback; fairseq's own spawning needs one GPU per rank."""
    port = free_loopback_port()
    processes = []
    for rank in (0, 1):
        command = [sys.executable, "-m", "fairseq_cli.train", str(data_bin), "--user-dir", str(USER_DIR),
                   *TINY_MODEL, "--save-dir", str(save_dir), *flags, "--distributed-world-size", "2",
                   "--distributed-rank", str(rank), "--distributed-no-spawn", "--distributed-backend", "gloo",
                   "--distributed-init-method", f"tcp://127.0.0.1:{port}", "--ddp-backend", "legacy_ddp",
                   "--device-id", "0"]  # fmt: skip
        processes.append(subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                          env={**environment(), "OMP_NUM_THREADS": "1"}))  # fmt: skip
    outputs = [process.communicate(timeout=300)[0] for process in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    log = TrainingLog()
    for line in outputs[0].splitlines():
        log.add_line(line)
    return log


def test_two_process_cpu_training_and_resume_with_intra_distillation(tiny_data_bin, tmp_path):
    flags = [*INTRA, "--adaptive-alpha", "--alpha-p", "1.5", "--alpha-q", "10"]
    first = train_two_processes(tiny_data_bin, tmp_path, [*flags, "--max-update", "5"])
    assert first.num_updates == 5
    # resuming broadcasts the state rank 0 loaded (its config included) to rank 1 through torch.load
    resumed = train_two_processes(tiny_data_bin, tmp_path, [*flags, "--max-update", "10"])
    alphas = {int(r["num_updates"]): float(r["alpha"]) for r in resumed.inner}
    assert sorted(alphas) == [6, 7, 8, 9, 10]
    for update, value in alphas.items():
        assert value == pytest.approx(paper_alpha(update - 1, 10, 5.0, 1.5, 10.0), abs=1e-3)
    assert alphas[6] < 5.0 and alphas[10] == 5.0

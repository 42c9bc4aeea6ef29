"""The IWSLT'14 Hydra configs (configs/fairseq/iwslt14) against the Recipe they transcribe, and run
through ``fairseq-hydra-train``.

The Recipe (intradist/recipes/translation.py) is the reference: its ``fairseq_args()`` flag list is
parsed, by hand for the key hyperparameters and by fairseq's own parser for every field, and
compared with what fairseq-hydra-train would hand to the task, model and criterion builders, so
that the configs and the Recipe cannot drift apart.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import pytest
import yaml
from fairseq import options
from fairseq.criterions import CRITERION_DATACLASS_REGISTRY
from fairseq.dataclass.initialize import add_defaults, hydra_init
from fairseq.dataclass.utils import merge_with_parent
from fairseq.models import ARCH_CONFIG_REGISTRY
from fairseq.tasks import TASK_DATACLASS_REGISTRY
from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.version import VersionBase
from omegaconf import OmegaConf, open_dict

import user_dir  # noqa: F401  (registers the plugin's task and criterions for the builders below)
from intradist.recipes.fairseq_runs import USER_DIR, environment
from intradist.prepare.iwslt14 import SOURCE_LANGS
from intradist.paths import REPO_ROOT
from intradist.recipes.translation import PAPER_SWITCHES, Recipe, default_paths

CONFIG_DIR = REPO_ROOT / "configs" / "fairseq" / "iwslt14"
TEACHER = "/teachers/checkpoint_best.pt"
METHOD_CONFIGS = {"baseline": "baseline", "intra": "intra", "kd": "kd", "self-distill": "self_distill"}

#: (config name, Recipe, Hydra overrides): every pair config of the table and every method config.
CASES: List[Tuple[str, Recipe, List[str]]] = []
for _lang in SOURCE_LANGS:
    for _method in ("baseline", "intra"):
        _data, _save = default_paths(_lang, _method, seed=1, smoke=False)
        CASES.append((f"{_lang}_en_{_method}", Recipe(_lang, _method, str(_data), str(_save), fp16=True), []))
for _method, _name in METHOD_CONFIGS.items():
    _data, _save = default_paths("de", _method, seed=1, smoke=False)
    _teacher = ["criterion.teacher_path=" + TEACHER] if _method in ("kd", "self-distill") else []
    _switches = replace(PAPER_SWITCHES, teacher=TEACHER)
    CASES.append((_name, Recipe("de", _method, str(_data), str(_save), distillation=_switches, fp16=True),
                  [f"task.data={_data}", f"checkpoint.save_dir={_save}", *_teacher]))  # fmt: skip
CASE_IDS = [name for name, _, _ in CASES]


def effective_config(name: str, overrides: Sequence[str] = ()) -> Dict[str, Dict[str, object]]:
    """``{group: {field: value}}`` as fairseq-hydra-train hands the config to fairseq's builders.

    Composes like ``fairseq_cli.hydra_train`` (the primary config validated against the
    FairseqConfig schema stored under its name), fills in the registered defaults and resolves,
    then does what the builders do: merge the task's and criterion's dataclass defaults and run
    the architecture function on the model config.
    """
    hydra_init(name)
    version_base = VersionBase.instance().getbase()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
            cfg = compose(config_name=name, overrides=list(overrides))
    finally:
        # One name per process, as in fairseq-hydra-train: a schema left under "baseline" would
        # also be matched to baseline.yaml when a pair config includes it, and reset the pair's keys.
        ConfigStore.instance().repo.pop(f"{name}.yaml", None)
        # The version base is process-wide: fairseq's own hydra.experimental.initialize (later
        # tests in this process build criterions through it) raises once it is 1.2 or more.
        VersionBase.instance().version_base = version_base
    add_defaults(cfg)
    cfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True))
    groups: Dict[str, Dict[str, object]] = {}
    for group in cfg:
        node = cfg[group]
        if not OmegaConf.is_dict(node):
            continue
        if group == "task":
            node = merge_with_parent(TASK_DATACLASS_REGISTRY[node._name](), node)
        elif group == "criterion":
            node = merge_with_parent(CRITERION_DATACLASS_REGISTRY[node._name](), node)
        elif group == "model":
            with open_dict(node):
                ARCH_CONFIG_REGISTRY[node._name](node)
        groups[group] = {
            key: OmegaConf.to_container(value) if OmegaConf.is_config(value) else value for key, value in node.items()
        }
    return groups


def _flag(flags: List[str], name: str) -> str:
    """The value after the last ``name`` in a flag list (fairseq, like argparse, takes the last)."""
    return flags[len(flags) - 1 - flags[::-1].index(name) + 1]


#: The key hyperparameters: Recipe flag -> where the Hydra config holds it.
KEY_SETTINGS = {
    "--arch": ("model", "_name"), "--task": ("task", "_name"), "--criterion": ("criterion", "_name"),
    "--optimizer": ("optimizer", "_name"), "--lr-scheduler": ("lr_scheduler", "_name"),
    "--lr": ("optimization", "lr"), "--warmup-updates": ("lr_scheduler", "warmup_updates"),
    "--adam-betas": ("optimizer", "adam_betas"), "--adam-eps": ("optimizer", "adam_eps"),
    "--weight-decay": ("optimizer", "weight_decay"), "--dropout": ("model", "dropout"),
    "--attention-dropout": ("model", "attention_dropout"), "--max-tokens": ("dataset", "max_tokens"),
    "--update-freq": ("optimization", "update_freq"), "--max-update": ("optimization", "max_update"),
    "--seed": ("common", "seed"), "--label-smoothing": ("criterion", "label_smoothing"),
    "--num-passes": ("criterion", "num_passes"), "--alpha": ("criterion", "alpha"),
    "--adaptive-alpha": ("criterion", "adaptive_alpha"), "--alpha-p": ("criterion", "alpha_p"),
    "--alpha-q": ("criterion", "alpha_q"), "--divergence": ("criterion", "divergence"),
    "--teacher-path": ("criterion", "teacher_path"), "--kd-weight": ("criterion", "kd_weight"),
    "--kd-temperature": ("criterion", "kd_temperature"),
}  # fmt: skip


def _same(config_value: object, flag_value: str) -> bool:
    if isinstance(config_value, list) and len(config_value) == 1:  # --lr 5e-4 is lr: [0.0005]
        config_value = config_value[0]
    if isinstance(config_value, (int, float)) and not isinstance(config_value, bool):
        return float(config_value) == float(flag_value)
    return str(config_value) == flag_value


@pytest.mark.parametrize("name, recipe, overrides", CASES, ids=CASE_IDS)
def test_key_hyperparameters_equal_the_recipes_flags(name, recipe, overrides):
    groups = effective_config(name, overrides)
    flags = recipe.fairseq_args()
    checked = {flag for flag in KEY_SETTINGS if flag in flags}
    assert {"--lr", "--warmup-updates", "--dropout", "--max-tokens", "--max-update", "--label-smoothing"} <= checked
    if recipe.method == "intra":
        assert {"--num-passes", "--alpha", "--adaptive-alpha", "--alpha-p", "--alpha-q", "--divergence"} <= checked
    for flag in sorted(checked):
        group, key = KEY_SETTINGS[flag]
        value, expected = groups[group][key], _flag(flags, flag)
        assert _same(value, expected), f"{name}: {group}.{key}={value!r}, Recipe {flag} {expected}"
    assert Path(REPO_ROOT, groups["task"]["data"]) == Path(recipe.data)  # relative paths: from the repository root
    assert Path(REPO_ROOT, groups["checkpoint"]["save_dir"]) == Path(recipe.save_dir)
    assert groups["common"]["fp16"] is recipe.fp16 is True  # the recipe as run on a GPU


#: The task's copies of the original code's --alpha/--adaptive-alpha: argparse gives task and
#: criterion one shared flag, Hydra keeps them apart; the task reads them only with --num-iter > 1.
TASK_LEGACY_FIELDS = {("task", "alpha"), ("task", "adaptive_alpha")}
PATH_FIELDS = {("task", "data"), ("checkpoint", "save_dir"), ("common", "user_dir")}
NAME_FLAGS = {"task": "task", "criterion": "criterion", "model": "arch", "optimizer": "optimizer",
              "lr_scheduler": "lr_scheduler"}  # fmt: skip


@pytest.mark.parametrize("name, recipe, overrides", CASES, ids=CASE_IDS)
def test_every_setting_equals_fairseq_train_with_the_recipes_flags(name, recipe, overrides):
    groups = effective_config(name, overrides)
    args = options.parse_args_and_arch(options.get_training_parser(), input_args=recipe.fairseq_args())
    expected_paths = {"data": recipe.data, "save_dir": recipe.save_dir, "user_dir": str(USER_DIR)}
    compared, differences = set(), []
    for group, fields in groups.items():
        for key, value in fields.items():
            if key == "_name":
                if group not in NAME_FLAGS:
                    continue
                expected = getattr(args, NAME_FLAGS[group])
                same = value == expected
            elif (group, key) in TASK_LEGACY_FIELDS or not hasattr(args, key):
                continue
            elif (group, key) in PATH_FIELDS:
                same = Path(REPO_ROOT, str(value)).resolve() == Path(expected_paths[key]).resolve()
                expected = expected_paths[key]
            else:
                expected = getattr(args, key)
                same = value == expected or str(value) == str(expected)
            compared.add((group, key))
            if not same:
                differences.append(f"{group}.{key}={value!r}, fairseq-train {expected!r}")
    assert not differences, f"{name} differs from the Recipe:\n" + "\n".join(differences)
    # the whole training setup was compared, the model's dimensions after the architecture function included
    assert len(compared) > 150
    assert {("model", "encoder_embed_dim"), ("model", "decoder_ffn_embed_dim"), ("model", "encoder_attention_heads"),
            ("model", "decoder_layers"), ("model", "share_decoder_input_output_embed"), ("criterion", "_name"),
            ("optimization", "lr"), ("lr_scheduler", "warmup_updates"),
            ("dataset", "max_tokens")} <= compared  # fmt: skip
    if recipe.method == "intra":
        intra_fields = ("num_passes", "alpha", "adaptive_alpha", "alpha_p", "alpha_q", "divergence")
        assert {("criterion", key) for key in intra_fields} <= compared


TINY = [
    "model.encoder_layers=1", "model.decoder_layers=1", "model.encoder_embed_dim=32", "model.decoder_embed_dim=32",
    "model.encoder_ffn_embed_dim=64", "model.decoder_ffn_embed_dim=64", "model.encoder_attention_heads=2",
    "model.decoder_attention_heads=2", "common.cpu=true", "common.fp16=false", "common.log_interval=1",
    "dataset.data_buffer_size=0",  # no prefetch thread: it can abort the process at exit (intradist.recipes.fairseq_runs)
]  # fmt: skip
_RECORD = re.compile(r"\]\[(train_inner|train|valid)\]\[INFO\] - (\{.*\})\s*$")  # Hydra's log format


def hydra_train(config_name: str, overrides: Sequence[str], cwd: Path) -> subprocess.CompletedProcess:
    """``fairseq-hydra-train --config-dir configs/fairseq/iwslt14 --config-name NAME OVERRIDES`` as users run it."""
    script = Path(sys.executable).with_name("fairseq-hydra-train")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "fairseq_cli.hydra_train"]
    command += ["--config-dir", str(CONFIG_DIR), "--config-name", config_name, f"common.user_dir={USER_DIR}"]
    command += list(overrides)
    return subprocess.run(command, capture_output=True, text=True, env=environment(), cwd=cwd)


def test_fairseq_hydra_train_runs_the_intra_config(tiny_data_bin, tmp_path):
    save_dir = tmp_path / "run"
    run = hydra_train("de_en_intra", [f"task.data={tiny_data_bin}", f"checkpoint.save_dir={save_dir}",
                                      "optimization.max_update=3", *TINY], cwd=tmp_path)  # fmt: skip
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    records: Dict[str, List[dict]] = {"train_inner": [], "train": [], "valid": []}
    for line in output.splitlines():
        match = _RECORD.search(line)
        if match:
            records[match.group(1)].append(json.loads(match.group(2)))
    inner = records["train_inner"]
    assert [int(record["num_updates"]) for record in inner] == [1, 2, 3]
    assert int(records["train"][-1]["train_num_updates"]) == 3
    recipe = Recipe("de", "intra", "unused", "unused")
    # the criterion got the config's fields: K passes with a divergence term, and alpha on the
    # adaptive schedule over N = 3 updates (alpha(0) = 0; alpha is reached at N/p = 0.6), which also
    # shows that the task forwards the update number and criterion.max_update follows the override
    assert all(float(record["intra_distillation_loss"]) > 0 for record in inner)
    assert [float(record["alpha"]) for record in inner] == [0.0, recipe.distillation.alpha, recipe.distillation.alpha]
    # lr and warm-up of the config reached the scheduler: lr * update / warm-up updates
    for record in inner:
        expected_lr = recipe.lr * int(record["num_updates"]) / recipe.warmup_updates
        assert float(record["lr"]) == pytest.approx(expected_lr, rel=1e-2)
    assert (save_dir / "checkpoint_last.pt").is_file()
    composed = yaml.safe_load((save_dir / ".hydra" / "config.yaml").read_text())  # hydra.run.dir follows save_dir
    assert composed["criterion"]["_name"] == "intra_distillation" and composed["task"]["data"] == str(tiny_data_bin)


@pytest.mark.parametrize(
    "override, message",
    [
        pytest.param("criterion.num_pases=2", "num_pases", id="unknown_key"),  # Hydra refuses it
        pytest.param("+criterion.num_pases=2", "num_pases", id="added_unknown_key"),  # fairseq's dataclass refuses it
    ],
)
def test_an_unknown_key_fails_before_training(override, message, tiny_data_bin, tmp_path):
    save_dir = tmp_path / "run"
    run = hydra_train("de_en_intra", [f"task.data={tiny_data_bin}", f"checkpoint.save_dir={save_dir}", override, *TINY],
                      cwd=tmp_path)  # fmt: skip
    assert run.returncode != 0
    assert message in run.stdout + run.stderr
    assert not (save_dir / "checkpoint_last.pt").exists()

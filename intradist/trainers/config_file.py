"""Experiments as files: ``--config FILE.yaml`` for the trainers' commands, and the ``config.yaml`` every run saves.

A config file is a YAML mapping whose keys are the command's flags (``num-passes: 3`` or
``num_passes: 3``); it fills in what the command line does not give, so flags on the command line
win. Every value is checked as the flag would check it, and a mistake is one line naming the
file and the key. A run saves its effective flags as ``config.yaml`` in its output folder;
``--config OUT/config.yaml`` reruns the same experiment (give another ``--out``).

    @click.command("intradist train glue")
    @click.option("--epochs", type=float, default=20)
    @config_file_option
    def main(**options):
        ...  # train into OUT.partial, writing config_text(click.get_current_context()) as config.yaml
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, Optional

import click
import yaml

from intradist.errors import UserError

#: The first line of every saved config.yaml.
HEADER = "# The effective flags of this run. Rerun it: {command} --config config.yaml --out NEW_FOLDER\n"


def _load(ctx: click.Context, param: click.Parameter, value: Optional[str]) -> None:
    """Read ``value`` into ``ctx.default_map`` (eager: before any other flag is processed)."""
    if value is None:
        return
    path = Path(value)
    if not path.is_file():
        raise UserError(f"--config {path}: no such file")
    try:
        content = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise UserError(f"--config {path}: not YAML ({str(error).splitlines()[0]})") from None
    if content is None:
        content = {}
    if not isinstance(content, dict):
        raise UserError(f"--config {path}: expected a mapping of flags to values, got a {type(content).__name__}")
    by_name = {p.name: p for p in ctx.command.params if isinstance(p, click.Option) and p.name != "config"}
    defaults: Dict[str, Any] = {}
    for key, raw in content.items():
        name = str(key).lstrip("-").replace("-", "_")
        option = by_name.get(name)
        if option is None:
            raise UserError(f"--config {path}: unknown key {key!r}; {ctx.command_path} has no flag --{name.replace('_', '-')}")
        if raw is None:
            defaults[name] = None
            continue
        expected = _expected_kind(option)
        values = raw if option.multiple or option.nargs != 1 else [raw]
        if not isinstance(values, list) or not all(_is_kind(value, expected) for value in values):
            plural = "a list of " if option.multiple or option.nargs != 1 else ""
            raise UserError(f"--config {path}: key {key!r}: expected {plural}{expected}, got {_yaml_kind(raw)}")
        try:
            defaults[name] = option.type_cast_value(ctx, raw)
        except click.BadParameter as error:
            raise UserError(f"--config {path}: key {key!r}: {error.message}") from None
    ctx.meta["config_file"] = path
    ctx.default_map = {**(ctx.default_map or {}), **defaults}


def _expected_kind(option: click.Option) -> str:
    """What YAML value a flag takes: its exact type, so that a coercion can never hide a mistake."""
    if option.is_flag or isinstance(option.type, click.types.BoolParamType):
        return "true or false"
    if isinstance(option.type, (click.types.IntParamType, click.IntRange)):
        return "an integer"
    if isinstance(option.type, (click.types.FloatParamType, click.FloatRange)):
        return "a number"
    return "a string"


def _is_kind(value: Any, expected: str) -> bool:
    """Whether a YAML value is of the kind :func:`_expected_kind` names (a boolean is no number, 2.7 no integer)."""
    if expected == "true or false":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if expected == "an integer":
        return isinstance(value, int)
    if expected == "a number":
        return isinstance(value, (int, float))
    return isinstance(value, (str, int, float))  # a name or a path; YAML reads 2022 or 1e-3 as numbers


def _yaml_kind(value: Any) -> str:
    """A YAML value's kind in words, with the value when it is short."""
    kinds = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list", dict: "a mapping"}
    kind = next((words for cls, words in kinds.items() if type(value) is cls), type(value).__name__)
    return f"{kind} ({value!r})" if len(repr(value)) <= 40 else kind


def config_file_option(function: Callable) -> Callable:
    """The ``--config FILE.yaml`` option (keys are the command's flags; the command line wins)."""
    return click.option(
        "--config", type=click.Path(dir_okay=False), is_eager=True, expose_value=False, callback=_load,
        help="YAML file of flags (keys as the flags, e.g. num-passes: 3); flags given here win. "
             "Every run saves its own as OUT/config.yaml.",
    )(function)  # fmt: skip


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    return value


def effective_config(ctx: click.Context, values: Optional[Dict[str, Any]] = None) -> str:
    """The run's flags as YAML (keys as the flags), every option of the command with its final value."""
    values = ctx.params if values is None else values
    names = [p.name for p in ctx.command.params if isinstance(p, click.Option) and p.name in values]
    mapping = {name.replace("_", "-"): _plain(values[name]) for name in names}
    return yaml.safe_dump(mapping, sort_keys=False, allow_unicode=True)


def config_text(ctx: click.Context, values: Optional[Dict[str, Any]] = None) -> str:
    """The text of a run's ``config.yaml``: a header saying how to rerun it, then :func:`effective_config`."""
    return HEADER.format(command=ctx.command_path) + effective_config(ctx, values)

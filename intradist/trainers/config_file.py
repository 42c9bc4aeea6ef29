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
        try:
            defaults[name] = option.type_cast_value(ctx, raw)
        except click.BadParameter as error:
            raise UserError(f"--config {path}: key {key!r}: {error.message}") from None
    ctx.meta["config_file"] = path
    ctx.default_map = {**(ctx.default_map or {}), **defaults}


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

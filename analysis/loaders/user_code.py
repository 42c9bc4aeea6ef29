"""The user's own code named on the command line as ``module:function`` (a model factory, a batch hook)."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Tuple

from intradist.errors import UserError


def import_callable(spec: str, flag: str) -> Tuple[ModuleType, Callable[..., Any]]:
    """The module and the function named by ``"module:function"`` (``module`` importable, or a ``.py`` file)."""
    module_name, _, attribute = spec.rpartition(":")
    if not module_name or not attribute:
        raise UserError(f"{flag} {spec}: expected module:function (a module name or a .py file, then the function)")
    if module_name.endswith(".py"):
        file = Path(module_name)
        if not file.is_file():
            raise UserError(f"{flag} {spec}: no such file {file}")
        unique_name = f"_intradist_user_{hashlib.sha256(str(file.resolve()).encode()).hexdigest()[:12]}_{file.stem}"
        module_spec = importlib.util.spec_from_file_location(unique_name, file)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[unique_name] = module
        module_spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name and module_name.startswith(error.name):
                raise UserError(f"{flag} {spec}: no module named {module_name!r} (is it on PYTHONPATH?)") from None
            raise
    function = getattr(module, attribute, None)
    if not callable(function):
        raise UserError(f"{flag} {spec}: {module_name} has no function {attribute!r}")
    return module, function

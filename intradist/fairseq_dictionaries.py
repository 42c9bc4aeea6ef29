"""The dictionaries a fairseq checkpoint was trained with, compared symbol for symbol.

A teacher, or the data an analysis batches, fits a checkpoint only when its dictionaries hold the
same symbols in the same order: two dictionaries of equal size but other symbols give the same
tensor shapes and wrong tokens, silently. The plugin's criterions therefore store the symbols
of the task's dictionaries in every checkpoint they train (``task_state``, plain lists of
strings, read weights-only); for a checkpoint without them (trained by a stock criterion) the
dictionary files of the data folder its config records stand in. fairseq is not imported here:
a checkpoint's state is a plain dict, a dictionary file is text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Tuple

#: The key of the symbols in a checkpoint's ``task_state``: {"source": [...], "target": [...]}.
STATE_KEY = "intradist_dictionaries"


def file_symbols(path: Path) -> Optional[List[str]]:
    """The symbols of a fairseq ``dict.*.txt`` in order (what follows the special symbols), None if absent."""
    if not path.is_file():
        return None
    return [line.split(" ")[0] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def dictionary_symbols(dictionary: Any) -> List[str]:
    """The symbols of a ``fairseq.data.Dictionary`` after its special ones: what its ``dict.*.txt`` lists."""
    return list(dictionary.symbols[dictionary.nspecial :])


def task_setting(state: Mapping[str, Any], name: str) -> Optional[Any]:
    """A task setting of a checkpoint's config (``cfg.task``, or ``args`` of an older checkpoint)."""
    if state.get("args") is not None:
        return getattr(state["args"], name, None)
    task = (state.get("cfg") or {}).get("task")
    return task.get(name) if isinstance(task, Mapping) else getattr(task, name, None)


def recorded_data(state: Mapping[str, Any]) -> Optional[Path]:
    """The data folder a checkpoint's config records (its first shard), None if it records none."""
    data = task_setting(state, "data")
    return Path(str(data).split(":")[0]) if data else None


def languages(folder: Path, state: Mapping[str, Any]) -> Tuple[Optional[str], Optional[str]]:
    """(source, target) language of a checkpoint's data: from its config, else as fairseq infers them.

    fairseq's translation task, given no ``--source-lang``/``--target-lang``, reads the pair from
    the name of the binarized training set, ``train.SRC-TGT.SRC.idx``.
    """
    source, target = task_setting(state, "source_lang"), task_setting(state, "target_lang")
    if source and target:
        return source, target
    for index in sorted(folder.glob("train.*-*.*.idx")):
        pair, lang = index.name.split(".")[1:3]
        first, _, second = pair.partition("-")
        if lang == first:
            return first, second
    return source, target


def data_symbols(folder: Path, state: Mapping[str, Any]) -> Dict[str, Optional[List[str]]]:
    """The source and target symbols of a data folder, for the languages of the checkpoint."""
    return {side: file_symbols(folder / f"dict.{lang}.txt") if lang else None
            for side, lang in zip(("source", "target"), languages(folder, state))}  # fmt: skip


def checkpoint_symbols(state: Mapping[str, Any]) -> Optional[Dict[str, Optional[List[str]]]]:
    """The symbols a checkpoint was trained with: stored in it, else those of its recorded data folder.

    None when neither is there (a stock checkpoint whose data folder is gone): nothing to compare.
    """
    stored = (state.get("task_state") or {}).get(STATE_KEY)
    if isinstance(stored, Mapping) and stored.get("target") is not None:
        return {"source": stored.get("source"), "target": stored.get("target")}
    folder = recorded_data(state)
    if folder is None:
        return None
    found = data_symbols(folder, state)
    return found if found["target"] is not None else None


def first_difference(ours: Optional[List[str]], theirs: Optional[List[str]]) -> Optional[str]:
    """How two symbol lists differ, in words (None when equal, or when either is unknown)."""
    if ours is None or theirs is None or ours == theirs:
        return None
    if len(ours) != len(theirs):
        return f"{len(ours)} symbols against {len(theirs)}"
    index = next(i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b)
    return f"entry {index} is {ours[index]!r} against {theirs[index]!r}"


def mismatch(checkpoint: Mapping[str, Optional[List[str]]], other: Mapping[str, Optional[List[str]]]) -> Optional[str]:
    """The first side (target, then source) whose symbols differ, in words; None when none does."""
    for side in ("target", "source"):
        difference = first_difference(checkpoint.get(side), other.get(side))
        if difference is not None:
            return f"{side} dictionary: {difference}"
    return None

"""The fidelity ledger: every paper-recipe setting beside the authors' value, where it is written, and its test.

One YAML file per recipe under ``docs/fidelity/`` holds the data; ``docs/fidelity.md`` is rendered
from it (``python -m intradist.fidelity > docs/fidelity.md``), and ``tests/test_fidelity.py``
checks both directions against the same data, so the docs, the config files and the tests cannot
drift apart:

- a setting with a ``key`` is read from every config file it applies to and must equal ``ours``;
- a setting is a *match* when ``ours`` equals ``authors``, else it must say why in ``note``;
- a named ``test`` must exist (``tests/FILE.py::test_name``);
- ``docs/fidelity.md`` must equal :func:`render` of the ledger.

A recipe file::

    title: PAN-X NER (XTREME)               # the table row(s) the recipe reproduces
    repository: fe1ixxu/Intra-Distillation  # default repository of every source
    commit: 6304a78                         # the commit read
    configs: [configs/xtreme/panx_intra.yaml, ...]
    settings:
      - name: learning rate
        authors: 2.0e-5
        source: Zero_Shot_Cross_Lingual/scripts/train_panx.sh:31   # path:line in the repository
        key: lr              # config key that carries it (omit: not a config-file setting)
        ours: 2.0e-5         # our value (defaults to ``authors``)
        configs: [...]       # optional: only these config files (e.g. the intra rows)
        test: tests/trainers/test_xtreme.py::test_name
        note: why ours differs, or what the value means
    deviations:
      - what: ...; why: ...; effect: ...
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import yaml

ROOT = Path(__file__).resolve().parent.parent
LEDGER = ROOT / "docs" / "fidelity"
RENDERED = ROOT / "docs" / "fidelity.md"

#: The order recipes appear in docs/fidelity.md (file stems under docs/fidelity/).
RECIPE_ORDER = ("iwslt14", "glue", "panx", "tydiqa", "vision")


@dataclass(frozen=True)
class Setting:
    """One setting of a recipe: the authors' value, ours, and where each is pinned."""

    name: str
    authors: Any
    source: str
    ours: Any
    key: Optional[str] = None
    configs: Tuple[str, ...] = ()
    test: Optional[str] = None
    note: str = ""
    repository: str = ""

    @property
    def matches(self) -> bool:
        return same_value(self.authors, self.ours)


@dataclass(frozen=True)
class Recipe:
    stem: str
    title: str
    repository: str
    commit: str
    configs: Tuple[str, ...]
    settings: Tuple[Setting, ...]
    deviations: Tuple[Dict[str, str], ...] = field(default_factory=tuple)


def same_value(a: Any, b: Any) -> bool:
    """Equal as recipe values: numbers to 1e-9 relative (YAML reads 2e-5 and 2.0e-05 alike), the rest exactly."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=0.0)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    return a == b


def load_recipe(path: Path) -> Recipe:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    repository = data["repository"]
    settings = []
    for entry in data["settings"]:
        settings.append(Setting(
            name=entry["name"], authors=entry["authors"], source=str(entry["source"]),
            ours=entry.get("ours", entry["authors"]), key=entry.get("key"),
            configs=tuple(entry.get("configs", ())), test=entry.get("test"), note=entry.get("note", ""),
            repository=entry.get("repository", repository),
        ))  # fmt: skip
    return Recipe(
        stem=path.stem, title=data["title"], repository=repository, commit=str(data["commit"]),
        configs=tuple(data.get("configs", ())), settings=tuple(settings),
        deviations=tuple(data.get("deviations", ())),
    )  # fmt: skip


def load_ledger(folder: Path = LEDGER) -> List[Recipe]:
    """Every recipe file of the ledger, in :data:`RECIPE_ORDER` (others after, by name)."""
    paths = sorted(folder.glob("*.yaml"), key=lambda p: (RECIPE_ORDER.index(p.stem) if p.stem in RECIPE_ORDER
                                                          else len(RECIPE_ORDER), p.stem))  # fmt: skip
    return [load_recipe(path) for path in paths]


def config_files_of(recipe: Recipe, setting: Setting) -> Tuple[str, ...]:
    return setting.configs or recipe.configs


def config_value(values: Dict[str, Any], key: str) -> Tuple[bool, Any]:
    """(present, value) of ``key`` in a config file; a dotted key (``optimization.lr``) that is not a
    flat key walks nested mappings, as fairseq's Hydra configs nest their groups."""
    if key in values:
        return True, values[key]
    node: Any = values
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def problems(recipes: List[Recipe], root: Path = ROOT) -> List[str]:
    """Every way the ledger disagrees with the config files and the tests (empty: it holds)."""
    found = []
    configs: Dict[str, Any] = {}  # each config file parsed once, however many settings read it
    texts: Dict[Path, str] = {}  # each test file read once
    for recipe in recipes:
        for setting in recipe.settings:
            where = f"docs/fidelity/{recipe.stem}.yaml, {setting.name!r}"
            if not setting.matches and not setting.note:
                found.append(f"{where}: ours ({setting.ours!r}) differs from the authors' ({setting.authors!r}) "
                             "without a note saying why")  # fmt: skip
            if setting.key:
                for config in config_files_of(recipe, setting):
                    if config not in configs:
                        configs[config] = yaml.safe_load((root / config).read_text(encoding="utf-8"))
                    present, value = config_value(configs[config], setting.key)
                    if not present:
                        found.append(f"{where}: {config} has no key {setting.key!r}")
                    elif not same_value(value, setting.ours):
                        found.append(f"{where}: {config} says {setting.key}: {value!r}, "
                                     f"the ledger says {setting.ours!r}")  # fmt: skip
            if setting.test:
                test_file, _, test_name = setting.test.partition("::")
                path = root / test_file
                if path.is_file() and path not in texts:
                    texts[path] = path.read_text(encoding="utf-8")
                if f"def {test_name}(" not in texts.get(path, ""):
                    found.append(f"{where}: test {setting.test} does not exist")
    return found


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(_cell(item) for item in value)
    return str(value).replace("|", "\\|").replace("\n", " ")


def _source_link(setting: Setting, commit: str) -> str:
    path, _, line = setting.source.partition(":")
    if not path or path.startswith("(") or " " in path:  # a description, not a file
        return _cell(setting.source)
    anchor = f"#L{line}" if line.isdigit() else ""
    label = f"`{path}:{line}`" if line else f"`{path}`"
    return f"[{label}](https://github.com/{setting.repository}/blob/{commit}/{path}{anchor})"


def render(recipes: List[Recipe]) -> str:
    """docs/fidelity.md: per recipe, a table of every setting and the list of deviations."""
    lines = [
        "# Fidelity: each paper recipe, setting by setting, against the authors' code",
        "",
        "<!-- Rendered from docs/fidelity/*.yaml by `python -m intradist.fidelity > docs/fidelity.md`;",
        "     tests/test_fidelity.py checks the config files and the tests against the same data. -->",
        "",
        "Nothing here can run the paper's experiments at full scale (no GPU, no IWSLT'14 or XTREME",
        "downloads in CI). The evidence that our recipes reproduce the paper is that they compute the same",
        "objective, with the same settings, as the authors' code: each row below names the authors' value",
        "with the file and line it is written in, our value, and the test that pins ours. A row whose",
        "*key* is a config key is checked against every config file of the recipe by",
        "`tests/test_fidelity.py`; ✓ marks a match, ≠ a deliberate difference explained in its note.",
        "",
        "Where the authors' code does something that looks accidental (a divergence summed over padding,",
        "a term that grows with the batch size), the recipe reproduces it through a named option, so the",
        "paper's numbers are what our recipe optimises; our generic trainers keep the sensible default.",
        "",
    ]
    for recipe in recipes:
        lines += [f"## {recipe.title}", "",
                  f"Reference: [{recipe.repository}](https://github.com/{recipe.repository}/tree/{recipe.commit}) "
                  f"at commit `{recipe.commit}`. Config files: "
                  + ", ".join(f"`{c}`" for c in recipe.configs) + ".", "",
                  "| setting | authors | source | ours | config key | | test | note |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for s in recipe.settings:
            key = f"`{s.key}`" if s.key else ""
            if s.key and s.configs:
                key += " (" + ", ".join(Path(c).stem for c in s.configs) + ")"
            test = f"`{s.test.split('::')[-1]}`" if s.test else ""
            lines.append(f"| {_cell(s.name)} | {_cell(s.authors)} | {_source_link(s, recipe.commit)} | "
                         f"{_cell(s.ours)} | {key} | {'✓' if s.matches else '≠'} | {test} | {_cell(s.note)} |")  # fmt: skip
        if recipe.deviations:
            lines += ["", "Deviations that remain:", ""]
            for d in recipe.deviations:
                lines.append(f"- **{d['what']}** Why: {d['why']} Expected effect: {d['effect']}")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    recipes = load_ledger()
    found = problems(recipes)
    if found:
        for line in found:
            print(f"fidelity: {line}", file=sys.stderr)
        sys.exit(2)
    sys.stdout.write(render(recipes))


if __name__ == "__main__":
    main()

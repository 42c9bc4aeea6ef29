"""``intradist prepare xtreme``: the flags, their checks, and the order of the two tasks."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence

import click

from intradist.errors import UserError
from intradist.prepare.xtreme.panx import (
    PANX_ZIP,
    PanxSource,
    completed_panx,
    manual_panx_steps,
    panx_source,
    prepare_panx,
)
from intradist.prepare.xtreme.tydiqa import TYDIQA_DEV, TYDIQA_LANGUAGES, TYDIQA_TRAIN, prepare_tydiqa

COMMAND = "intradist prepare xtreme"
TASKS = ("panx", "tydiqa")
DEFAULT_OUT = Path("data-bin") / "xtreme"


def _split_list(value: str, option: str) -> List[str]:
    items = list(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    if not items:
        raise UserError(f"{option}: nothing given")
    return items


def _tasks(value: str) -> List[str]:
    tasks = _split_list(value, "--tasks")
    unknown = [task for task in tasks if task not in TASKS]
    if unknown:
        raise UserError(f"--tasks: unknown task {unknown[0]!r}; choose from {','.join(TASKS)}")
    return [task for task in TASKS if task in tasks]


def _check_panx_languages(languages: Sequence[str], source: PanxSource) -> None:
    missing = [lang for lang in languages if lang not in source.members]
    if missing:
        available = source.languages()
        shown = ",".join(available[:12]) + (f",... ({len(available)} in all)" if len(available) > 12 else "")
        raise UserError(f"--languages: {source.path} has no PAN-X archive for {','.join(missing)}; it has {shown}")


EXAMPLES = """\b
Examples:
  intradist prepare xtreme --panx-archive ~/Downloads/AmazonPhotos.zip
  intradist prepare xtreme --tasks tydiqa --out data-bin/xtreme
  intradist prepare xtreme --languages en,de,fi --panx-archive ~/Downloads/AmazonPhotos.zip
  intradist prepare xtreme --archives ~/xtreme-downloads   # TyDiQA files and AmazonPhotos.zip, offline
"""


@click.command(COMMAND, context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXAMPLES)
@click.option("--out", type=click.Path(path_type=Path), default=DEFAULT_OUT, show_default=True,
              help="Folder for panx/, tydiqa/, downloaded archives, the checksum record, the manifest.")  # fmt: skip
@click.option("--tasks", default=",".join(TASKS), show_default=True, help="Comma-separated: panx, tydiqa.")
@click.option("--languages", default=None,
              help="Comma-separated language codes (default: every language the sources have). TyDiQA "
                   "uses those among ar,bn,en,fi,id,ko,ru,sw,te for dev; its English train file is always "
                   "written.")  # fmt: skip
@click.option("--panx-archive", type=click.Path(path_type=Path), default=None,
              help=f"PAN-X's {PANX_ZIP} (downloaded by hand), or a folder of its {{lang}}.tar.gz files.")  # fmt: skip
@click.option("--archives", type=click.Path(path_type=Path), default=None,
              help=f"Folder of archives downloaded by hand ({TYDIQA_TRAIN}, {TYDIQA_DEV}, {PANX_ZIP}); "
                   "nothing is downloaded.")  # fmt: skip
def main(out: Path, tasks: str, languages: Optional[str], panx_archive: Optional[Path],
         archives: Optional[Path]) -> None:  # fmt: skip
    """PAN-X (NER) and TyDiQA-GoldP (QA) of XTREME in plain formats, for zero-shot cross-lingual transfer.

    \b
    OUT/panx/{lang}/{train,dev,test}.tsv   token<TAB>TAG (BIO), a blank line after each sentence
    OUT/tydiqa/{code}/dev.json             SQuAD v1.1 JSON, ar bn en fi id ko ru sw te
    OUT/tydiqa/en/train.json               the English training questions (ids english-*)
    OUT/xtreme-manifest.json               sources, SHA-256 and counts of every file

    \b
    TyDiQA-GoldP v1.1 is downloaded from storage.googleapis.com/tydiqa into OUT/archives and checked
    against its published SHA-256. PAN-X cannot be downloaded: get AmazonPhotos.zip by hand from
    the Amazon Drive link of the xtreme README (run without --panx-archive to see the steps) and pass
    it with --panx-archive. No checksum of it is published: the SHA-256 of each language's archive
    is recorded in OUT/xtreme-archives.sha256 when first converted, and a different one is refused
    later. Reruns skip what is complete; an interrupted step leaves only .partial items.
    """
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out}: is a file; pick a folder")
    if archives is not None and not archives.is_dir():
        raise UserError(f"--archives {archives}: not a folder")
    chosen = _tasks(tasks)
    wanted = _split_list(languages, "--languages") if languages is not None else None
    source = panx_source(panx_archive, archives) if "panx" in chosen else None
    if source is not None and wanted is not None:
        _check_panx_languages(wanted, source)
    if chosen == ["tydiqa"] and wanted is not None:
        unknown = [lang for lang in wanted if lang not in TYDIQA_LANGUAGES]
        if unknown:
            raise UserError(f"--languages: TyDiQA-GoldP has no {','.join(unknown)}; "
                            f"choose from {','.join(TYDIQA_LANGUAGES)}")  # fmt: skip
    if "tydiqa" in chosen:
        codes = [code for code in TYDIQA_LANGUAGES if wanted is None or code in wanted]
        written = prepare_tydiqa(out, codes, archives)
        click.echo(f"TyDiQA-GoldP: {len(written)} files written, "
                   f"{len(codes) + 1 - len(written)} already there", err=True)  # fmt: skip
        click.echo(f"prepared {out / 'tydiqa'}")
    if "panx" in chosen:
        if source is None:
            done = completed_panx(out)
            if not done or (wanted is not None and not set(wanted) <= set(done)):
                raise UserError(manual_panx_steps(out, "tydiqa" in chosen))
            click.echo(f"PAN-X: {len(done) if wanted is None else len(wanted)} languages already there "
                       "(no --panx-archive, so no others)", err=True)  # fmt: skip
            click.echo(f"prepared {out / 'panx'}")
            return
        langs = wanted if wanted is not None else source.languages()
        converted = prepare_panx(out, source, langs)
        click.echo(f"PAN-X: {len(converted)} languages converted, {len(langs) - len(converted)} already there",
                   err=True)  # fmt: skip
        click.echo(f"prepared {out / 'panx'}")


if __name__ == "__main__":
    main()

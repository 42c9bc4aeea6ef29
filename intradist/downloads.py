"""Downloads and archives for the data preparation commands: atomic, progress bars, one-line failures."""

from __future__ import annotations

import http.client
import io
import tarfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from typing import Dict, Sequence, Union

from tqdm import tqdm

from intradist.errors import UserError

DOWNLOAD_TIMEOUT_S = 60


def _failure_reason(error: BaseException) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return str(error.reason)
    return str(error) or type(error).__name__


def download(urls: Sequence[str], dest: Path, hint: str) -> None:
    """Download the first of ``urls`` that answers into ``dest``, via ``dest.partial``, with a progress bar.

    When none answers: a :class:`UserError` naming every URL and its reason, then ``hint``.
    """
    partial = dest.with_name(dest.name + ".partial")
    failures = []
    for url in urls:
        try:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(partial, "wb") as handle:
                size = int(response.headers.get("Content-Length") or 0) or None
                with tqdm(total=size, unit="B", unit_scale=True, desc=f"{dest.name} from {url}") as progress:
                    for block in iter(lambda: response.read(1 << 20), b""):
                        handle.write(block)
                        progress.update(len(block))
        except (OSError, http.client.HTTPException) as error:  # URLError and socket timeouts are OSErrors
            partial.unlink(missing_ok=True)
            failures.append(f"{url} ({_failure_reason(error)})")
            continue
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(dest)
        return
    raise UserError(f"cannot download {', '.join(failures)}; {hint}")


def read_tar_members(archive: Union[Path, bytes], names: Sequence[str], where: str, expected: str,
                     remedy: str = "replace it with a complete copy") -> Dict[str, bytes]:  # fmt: skip
    """The named members of a gzipped tar archive (a file, or its bytes), read whole.

    One-line :class:`UserError` naming ``where`` for a damaged archive (with ``remedy``) or a
    missing member (saying what was ``expected``).
    """
    path, fileobj = (archive, None) if isinstance(archive, Path) else (None, io.BytesIO(archive))
    suffix = ".tgz" if str(where).endswith(".tgz") else ".tar.gz"
    try:
        with tarfile.open(path, "r:gz", fileobj=fileobj) as tar:
            members = {member.name.removeprefix("./"): member for member in tar.getmembers() if member.isfile()}
            found = {}
            for name in names:
                if name not in members:
                    raise UserError(f"{where}: has no member {name}; expected {expected}")
                handle = tar.extractfile(members[name])
                assert handle is not None  # a regular file
                found[name] = handle.read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        raise UserError(f"{where}: not a valid {suffix} archive ({error}); {remedy}") from error
    return found

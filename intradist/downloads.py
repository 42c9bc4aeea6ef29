"""Downloads for the data preparation commands: atomic, with a progress bar and one-line failures."""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from pathlib import Path
from typing import Sequence

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

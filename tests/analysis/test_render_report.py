"""scripts/render_report.sh: an analysis report rendered offline by headless Chromium (skipped without Chromium)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

REPO = Path(__file__).resolve().parent.parent.parent
SCRIPT = REPO / "scripts" / "render_report.sh"
CHROMIUM = next((shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")
                 if shutil.which(name)), None)  # fmt: skip


def _report(folder: Path) -> Path:
    """A small self-contained page in the report's form: an embedded PNG, inline style, no network."""
    import base64
    import io

    image = Image.new("RGB", (300, 200), (200, 30, 30))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    html = folder / "report.html"
    html.write_text("<!doctype html><html><head><style>body{margin:20px;background:#fff}</style></head><body>"
                    "<h1>Sensitivity report</h1><img alt='plot' src='data:image/png;base64,"
                    + base64.b64encode(buffer.getvalue()).decode() + "'></body></html>")  # fmt: skip
    return html


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (a system package)")
def test_a_report_renders_to_a_png_showing_its_embedded_image(tmp_path):
    out = tmp_path / "report.png"
    completed = subprocess.run(["bash", str(SCRIPT), str(_report(tmp_path)), str(out)], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
    image = Image.open(out).convert("RGB")
    assert image.width == 1280 and 200 < image.height < 2000  # the blank window below the page is trimmed
    reds = sum(1 for pixel in image.getdata() if pixel == (200, 30, 30))
    assert reds >= 300 * 200 * 0.9  # the embedded image was decoded and drawn (at most scaled by rounding)


def test_without_chromium_it_says_how_to_install_it(tmp_path):
    env = {**os.environ, "CHROMIUM": str(tmp_path / "no-such-browser")}
    completed = subprocess.run(["bash", str(SCRIPT), str(_report(tmp_path)), str(tmp_path / "out.png")],
                               capture_output=True, text=True, env=env)  # fmt: skip
    assert completed.returncode == 2
    assert "apt-get install chromium" in completed.stderr and len(completed.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.png").exists()


def test_a_missing_report_is_a_one_line_error(tmp_path):
    completed = subprocess.run(["bash", str(SCRIPT), str(tmp_path / "none.html"), str(tmp_path / "out.png")],
                               capture_output=True, text=True)  # fmt: skip
    assert completed.returncode == 2 and completed.stderr.strip() == f"render_report.sh: {tmp_path / 'none.html'}: no such file"

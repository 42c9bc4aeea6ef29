#!/usr/bin/env bash
# Render an HTML report (analyze-sensitivity's report.html, the quick start's) to a PNG with headless
# Chromium, offline: the reports embed their images and styles, so no network is needed or allowed.
#
#   bash scripts/render_report.sh REPORT.html OUT.png [WIDTH] [HEIGHT]
#     WIDTH x HEIGHT   the browser window in CSS pixels (default 1280 wide; without HEIGHT a tall window
#                      is rendered and the blank space below the page is trimmed off)
#
# Chromium is a system package, not a Python one: on Debian/Ubuntu `sudo apt-get install chromium`
# (or chromium-browser), on Fedora `sudo dnf install chromium`, on macOS `brew install --cask chromium`;
# CHROMIUM=/path/to/chrome picks a binary explicitly (Google Chrome works too).
set -euo pipefail
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }
case "${1:-}" in -h|--help) usage; exit 0 ;; esac
if [ $# -lt 2 ]; then
    usage >&2
    exit 2
fi
report=$1 out=$2 width=${3:-1280} height=${4:-}
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ ! -f "$report" ]; then
    echo "render_report.sh: $report: no such file" >&2
    exit 2
fi
browser=${CHROMIUM:-}
if [ -z "$browser" ]; then
    for candidate in chromium chromium-browser google-chrome google-chrome-stable; do
        if command -v "$candidate" >/dev/null 2>&1; then browser=$(command -v "$candidate"); break; fi
    done
fi
if [ -z "$browser" ] || ! command -v "$browser" >/dev/null 2>&1; then
    echo "render_report.sh: no Chromium found; install it (Debian/Ubuntu: sudo apt-get install chromium;" \
         "Fedora: sudo dnf install chromium; macOS: brew install --cask chromium) or set CHROMIUM=/path/to/chrome" >&2
    exit 2
fi
case "$out" in *.png) ;; *) echo "render_report.sh: $out: the output must be a .png file" >&2; exit 2 ;; esac

profile=$(mktemp -d)
staging="$out.partial.png"
trap 'rm -rf "$profile" "$staging"' EXIT
url="file://$(cd "$(dirname "$report")" && pwd)/$(basename "$report")"
# No network at all: background services off, and every host resolves nowhere.
flags=(--headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run --disable-background-networking
       --disable-component-update --disable-sync --disable-quic --user-data-dir="$profile"
       --host-resolver-rules="MAP * ~NOTFOUND")
height_given=$height
height=${height:-12000}
"$browser" "${flags[@]}" --window-size="$width,$height" --screenshot="$staging" "$url" >/dev/null 2>&1 || {
    echo "render_report.sh: $browser failed to render $report" >&2
    exit 1
}
if [ ! -s "$staging" ]; then
    echo "render_report.sh: $browser wrote no image for $report" >&2
    exit 1
fi
if [ -z "$height_given" ]; then  # trim the window's blank bottom (the project's Python and Pillow)
    bash "$repo/scripts/setup.sh"
    "$repo/.venv/bin/python" - "$staging" <<'PY'
import sys
from PIL import Image, ImageChops
path = sys.argv[1]
image = Image.open(path).convert("RGB")
background = Image.new("RGB", image.size, image.getpixel((image.width - 1, image.height - 1)))
box = ImageChops.difference(image, background).getbbox()
if box:
    image.crop((0, 0, image.width, min(image.height, box[3] + 24))).save(path)
PY
fi
mv "$staging" "$out"
echo "render_report.sh: $report -> $out"

#!/usr/bin/env bash
# Headless Chromium for the web page's browser tests (tests/apis/test_web_app.py): Debian's `chromium` package; and the
# fonts that draw Chinese / Japanese / Korean and emoji class names on overlays (tests/apis/test_apis.py; at run time
# declip_mm/apis/fonts.py finds them): fonts-noto-cjk, fonts-noto-color-emoji.
# Installs what is missing when this is root with apt-get; otherwise says why, and those tests skip with that reason.
# Measured: about 1 minute (apt-get update + 115 packages, 2026-12-01); the fonts add about 60 MB.
set -u
packages=()
command -v chromium >/dev/null 2>&1 || packages+=(chromium)
for font in fonts-noto-cjk fonts-noto-color-emoji; do
  dpkg -s "$font" >/dev/null 2>&1 || packages+=("$font")
done
if [ ${#packages[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "[declip-mm] ${packages[*]} not installed (needs root: apt-get install ${packages[*]}); the tests that need them will skip"
  exit 0
fi
log=$(mktemp)
echo "[declip-mm] installing ${packages[*]} for the browser and overlay-font tests (about a minute; log: $log)"
if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}"; } >"$log" 2>&1; then
  echo "[declip-mm] warning: ${packages[*]} could not be installed (see $log); the tests that need them will skip"
  tail -5 "$log"
fi
exit 0

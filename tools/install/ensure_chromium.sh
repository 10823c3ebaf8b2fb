#!/usr/bin/env bash
# Headless Chromium for the web page's browser tests (tests/test_web_app.py): Debian's `chromium` package.
# Installs it when missing and this is root with apt-get; otherwise says why, and those tests skip with that reason.
# Measured: about 1 minute (apt-get update + 115 packages, 2026-12-01).
set -u
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "[declip-mm] chromium is not installed (needs root: apt-get install chromium); the browser tests will skip"
  exit 0
fi
log=$(mktemp)
echo "[declip-mm] installing chromium for the browser tests (about a minute; log: $log)"
if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >"$log" 2>&1; then
  echo "[declip-mm] warning: chromium could not be installed (see $log); the browser tests will skip"
  tail -5 "$log"
fi
exit 0

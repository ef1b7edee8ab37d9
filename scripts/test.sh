#!/usr/bin/env bash
# Set up everything on a fresh machine of this kind and run the whole test suite.
# Chromium (Debian's package) is the real receiver of the rtc/ tests; without root or a
# package mirror those tests skip and say why.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "chromium not installed: its tests will skip"
fi
python3 -m venv .venv
.venv/bin/pip install -q -e '.[test,train,rtc,ray]'
.venv/bin/python -m pytest -q

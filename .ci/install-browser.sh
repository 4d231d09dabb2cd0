#!/usr/bin/env bash
# Prerequisites of the real-browser notebook test: Debian's Chromium, Playwright (driving it,
# never downloading its own browser) and JupyterLab. Idempotent.
set -euo pipefail
if ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || exit 1
  else
    exit 1
  fi
fi
python -m pip install -q --disable-pip-version-check playwright jupyterlab

#!/usr/bin/env bash
# Test prerequisites beyond the Python environment: Debian's Chromium for the browser tests.
# Quiet and idempotent; run by scripts/test before the tests.
set -euo pipefail
if [ ! -x /usr/bin/chromium ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    echo "== installing chromium for the browser tests"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
  else
    echo "== chromium is missing and cannot be installed here (needs root and apt-get):" \
      "browser tests will be skipped (or fail under CI=true)" >&2
  fi
fi

#!/usr/bin/env bash
# The whole test suite: lint (ruff), types (mypy --strict), tests (pytest).
# The tests start their own redis-server on free loopback ports, and drive
# Debian's Chromium for the browser test; both are installed here if missing.
set -euo pipefail
source "$(dirname "$0")/_venv.sh" dev
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${missing[*]} (apt-get)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "missing ${missing[*]}: install them (apt-get install ${missing[*]}); the tests that need them skip, or fail under CI=true" >&2
  fi
fi
echo "== ruff"; .venv/bin/ruff check src tests examples benchmarks
echo "== ruff format"; .venv/bin/ruff format --check src tests examples benchmarks
echo "== mypy"; .venv/bin/mypy
echo "== pytest"; .venv/bin/python -m pytest "$@"

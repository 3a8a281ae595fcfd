#!/usr/bin/env bash
# The whole test suite: lint (ruff), types (mypy --strict), tests (pytest).
# The tests start their own redis-server on a free loopback port.
set -euo pipefail
source "$(dirname "$0")/_venv.sh" dev
if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing redis-server (apt-get)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  else
    echo "redis-server is missing: install it (apt-get install redis-server); real-Redis tests need it" >&2
  fi
fi
echo "== ruff"; .venv/bin/ruff check src tests examples benchmarks
echo "== ruff format"; .venv/bin/ruff format --check src tests examples benchmarks
echo "== mypy"; .venv/bin/mypy
echo "== pytest"; .venv/bin/python -m pytest "$@"

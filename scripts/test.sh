#!/usr/bin/env bash
# The whole test suite: lint (ruff), types (mypy --strict), tests (pytest).
# The tests start their own redis-server on free loopback ports, drive Debian's
# Chromium for the browser test, and run a real OpenID Provider (panva's
# oidc-provider, npm, pinned by tests/oidc/package-lock.json) on Node; all are
# installed here if missing.
set -euo pipefail
source "$(dirname "$0")/_venv.sh" dev
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${missing[*]} (apt-get)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "missing ${missing[*]}: install them (apt-get install ${missing[*]}); the tests that need them skip, or fail under CI=true" >&2
  fi
fi
# the test OpenID Provider: npm ci when node_modules is missing or older than the lock
# (npm writes node_modules/.package-lock.json on every install)
if command -v npm >/dev/null 2>&1; then
  if [ ! -f tests/oidc/node_modules/.package-lock.json ] \
    || [ tests/oidc/node_modules/.package-lock.json -ot tests/oidc/package-lock.json ]; then
    echo "== npm ci (tests/oidc)"
    npm ci --prefix tests/oidc --no-audit --no-fund --loglevel=error \
      || echo "npm ci in tests/oidc failed: the OpenID Provider tests skip, or fail under CI=true" >&2
  fi
fi
echo "== ruff"; .venv/bin/ruff check src tests examples benchmarks
echo "== ruff format"; .venv/bin/ruff format --check src tests examples benchmarks
echo "== mypy"; .venv/bin/mypy
echo "== pytest"; .venv/bin/python -m pytest "$@"

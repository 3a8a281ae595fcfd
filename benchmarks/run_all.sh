#!/usr/bin/env bash
# Every benchmark, one after the other, each under a hard time limit ("make bench").
#
#   bash benchmarks/run_all.sh            # full: about 15 minutes
#   bash benchmarks/run_all.sh --quick    # about 4 minutes (100,000 entries for the memory part)
#
# Needs: redis-server on PATH; the Python packages in benchmarks/README.md; wrk is
# used when installed (else bench_http.py falls back to a Python load generator).
# Each script starts and stops its own redis-server(s) on free loopback ports and
# sends traffic only to 127.0.0.1. A script that runs over its limit gets SIGINT
# (so it still stops its servers), then SIGKILL 15 s later.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
QUICK=()
if [ "${1:-}" = "--quick" ]; then
  QUICK=(--quick)
fi
command -v redis-server >/dev/null 2>&1 || { echo "redis-server not found (apt-get install redis-server)" >&2; exit 2; }
"$PY" -c 'import signout, starlette, uvicorn, httpx, redis, flask, flask_jwt_extended' || {
  echo "missing Python packages: see benchmarks/README.md" >&2
  exit 2
}
command -v wrk >/dev/null 2>&1 || echo "note: wrk not found; bench_http.py will use its Python load generator"

failed=0
run() {
  local limit=$1
  shift
  echo
  echo "################ $* (limit ${limit} s)"
  if ! timeout --signal=INT --kill-after=15 "$limit" "$PY" "$@"; then
    echo "!! $1 failed or ran over ${limit} s" >&2
    failed=1
  fi
}
started=$SECONDS
run 300 benchmarks/bench_guard.py --all "${QUICK[@]}"
run 200 benchmarks/bench_wsgi.py --all "${QUICK[@]}"
run 120 benchmarks/bench_http.py "${QUICK[@]}"
run 240 benchmarks/bench_http.py --workers "${QUICK[@]}"
run 900 benchmarks/bench_store.py "${QUICK[@]}"
run 60 benchmarks/bench_reader.py "${QUICK[@]}"
echo
echo "(run_all: $((SECONDS - started)) s)"
exit $failed

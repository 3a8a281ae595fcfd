# Sourced by the other scripts: a project virtualenv in .venv with what it needs.
# Re-installs only when pyproject.toml changed since the last install.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "signout needs Python >= 3.10 (set PYTHON=/path/to/python3.x)" >&2
  exit 2
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
STAMP=".venv/.signout-installed"
WANT="$(sha256sum pyproject.toml | cut -d' ' -f1)-${1:-dev}"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/python -m pip install --quiet -e ".[${1:-dev}]" 2>&1 | grep -v '^WARNING: Location' || true
  .venv/bin/python -c 'import signout, jwt' # fail here, loudly, if the install did not work
  echo "$WANT" > "$STAMP"
fi

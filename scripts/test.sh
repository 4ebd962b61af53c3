#!/usr/bin/env bash
# Install XTTS Studio with its test extras, lint, then run the whole test suite.
# Extra arguments go to pytest (e.g. scripts/test.sh -k engine).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
scripts/install.sh --test
PY="${XTTS_STUDIO_VENV:-$ROOT/.venv}/bin/python"
"$PY" -m ruff check .
"$PY" -m ruff format --check .
exec "$PY" -m pytest "$@"

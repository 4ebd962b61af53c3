#!/usr/bin/env bash
# Install (or update) XTTS Studio, then start the web UI. Extra arguments go to webui.py.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
"$ROOT/scripts/install.sh"
exec "${XTTS_STUDIO_VENV:-$ROOT/.venv}/bin/python" "$ROOT/webui.py" "$@"

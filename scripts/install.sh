#!/usr/bin/env bash
# Install XTTS Studio into a virtualenv (.venv by default): system packages where this user may
# install them, the pinned Python packages, and the RVC engine. Re-running is quick: a stamp of the
# requirement files skips pip when nothing changed.
#   scripts/install.sh          runtime only
#   scripts/install.sh --test   runtime plus test extras (espeak-ng, chromium, nginx-light, pytest, playwright)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
WITH_TEST=0
[[ "${1:-}" == "--test" ]] && WITH_TEST=1
VENV="${XTTS_STUDIO_VENV:-$ROOT/.venv}"
PYTHON="${PYTHON:-python3.11}"

say() { printf '\033[1m[install]\033[0m %s\n' "$*"; }

system_packages=(ffmpeg)
if (( WITH_TEST )); then system_packages+=(espeak-ng chromium nginx-light); fi
missing=()
for pkg in "${system_packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if (( ${#missing[@]} )); then
  if command -v apt-get >/dev/null && [[ $EUID -eq 0 ]]; then
    say "installing system packages: ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
  elif command -v apt-get >/dev/null && sudo -n true 2>/dev/null; then
    say "installing system packages with sudo: ${missing[*]}"
    sudo DEBIAN_FRONTEND=noninteractive apt-get update -q
    sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
  else
    say "WARNING: please install these system packages yourself: ${missing[*]}"
    (( WITH_TEST )) && exit 1
  fi
fi

if ! command -v "$PYTHON" >/dev/null; then
  say "ERROR: $PYTHON not found. Install Python 3.11 (Debian/Ubuntu: apt install python3.11 python3.11-venv) or set PYTHON=/path/to/python3.11."
  exit 1
fi
if [[ ! -x "$VENV/bin/python" ]]; then
  say "creating virtualenv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip)

stamp_of() { cat "$@" scripts/install.sh | sha256sum | cut -d' ' -f1; }
install_if_changed() {  # name, then the requirement files it covers, then the pip command
  local name="$1"; shift
  local files=()
  while [[ "$1" != "--" ]]; do files+=("$1"); shift; done
  shift
  local stamp_file="$VENV/.installed-$name" stamp
  stamp="$(stamp_of "${files[@]}")"
  if [[ -f "$stamp_file" && "$(cat "$stamp_file")" == "$stamp" ]]; then
    say "$name packages up to date"
    return
  fi
  say "installing $name packages (the first time takes several minutes and ~8 GB)"
  "$@"
  echo "$stamp" > "$stamp_file"
}

install_if_changed runtime requirements.txt requirements-rvc.txt -- bash -c "
  set -e
  ${PIP[*]} install --quiet -r requirements.txt
  ${PIP[*]} install --quiet --no-deps --no-build-isolation -r requirements-rvc.txt
"
if (( WITH_TEST )); then
  install_if_changed test requirements-test.txt -- "${PIP[@]}" install --quiet -r requirements-test.txt
fi
say "ready: $VENV"

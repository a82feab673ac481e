#!/usr/bin/env bash
# Set up everything audiomill needs on a fresh machine: system packages, a venv, the project with
# all extras. Idempotent: a second run with unchanged setup.cfg does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3.11}
SYSTEM_PACKAGES=(ffmpeg espeak-ng sox libsndfile1 flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts)
SYSTEM_COMMANDS=(ffmpeg espeak-ng sox flite text2wave)
# festival's voices (the generated dialogs' speakers) are data, not commands
FESTIVAL_VOICES=(/usr/share/festival/voices/english/kal_diphone /usr/share/festival/voices/english/ked_diphone
                 /usr/share/festival/voices/us/cmu_us_slt_arctic_hts)

missing=()
for cmd in "${SYSTEM_COMMANDS[@]}"; do command -v "$cmd" >/dev/null || missing+=("$cmd"); done
for voice in "${FESTIVAL_VOICES[@]}"; do [ -d "$voice" ] || missing+=("$(basename "$voice")"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing system packages: ${SYSTEM_PACKAGES[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${SYSTEM_PACKAGES[@]}" >/dev/null
  else
    echo "setup: missing ${missing[*]}; install them as root: apt-get install ${SYSTEM_PACKAGES[*]}" >&2
    exit 1
  fi
fi

command -v "$PYTHON" >/dev/null || { echo "setup: $PYTHON not found (audiomill needs Python 3.11)" >&2; exit 1; }
stamp="$VENV/.audiomill-installed"
want=$(cat setup.cfg pyproject.toml | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
echo "setup: installing audiomill[dev] into $VENV (first time: several GB, a few minutes)"
# torch is pinned exactly by the extras, so pip never pulls a second build.
"$VENV/bin/python" -m pip install -q --progress-bar off -e ".[dev]"
"$VENV/bin/python" -m pip check
echo "$want" > "$stamp"

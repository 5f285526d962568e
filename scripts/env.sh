# Sourced by scripts/test and scripts/poundcam: makes ./.venv with poundcam installed, from nothing.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${POUNDCAM_VENV:-$ROOT/.venv}"
EXTRAS="${1:-}"
stamp="$VENV/.poundcam-installed$EXTRAS"
if [ ! -x "$VENV/bin/python" ]; then
    echo "poundcam: creating the environment in $VENV" >&2
    python3 -m venv "$VENV"
fi
if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
    echo "poundcam: installing dependencies (first run takes a few minutes)" >&2
    "$VENV/bin/python" -m pip install -q --upgrade pip >&2
    "$VENV/bin/python" -m pip install -q -e "$ROOT$EXTRAS" >&2
    touch "$stamp"
fi

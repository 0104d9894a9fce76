#!/usr/bin/env bash
# Sets up (idempotent) and runs the whole test suite, real models included. CI runs exactly this.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
"$ROOT/scripts/setup.sh" --dev
cd "$ROOT"
exec "$ROOT/.venv/bin/python" -m pytest "$@"

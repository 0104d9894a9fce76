#!/usr/bin/env bash
# Sets up (idempotent) and runs the simulated drive on the embedded defaults: no microphone needed.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
"$ROOT/scripts/setup.sh"
cd "$ROOT"
exec "$ROOT/.venv/bin/cabin-agent" demo "$@"

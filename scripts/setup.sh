#!/usr/bin/env bash
# Sets up cabin-agent in ./.venv: system packages, llama-cpp-python (built once for this CPU, then cached),
# the package with its engines, and the model profile. Idempotent; the second run takes seconds.
set -euo pipefail

usage() { echo "usage: scripts/setup.sh [--dev] [--profile NAME] [--no-models]" >&2; exit 64; }
DEV=0; PROFILE=dev; MODELS=1
while [ $# -gt 0 ]; do
  case "$1" in
    --dev) DEV=1 ;;
    --profile) PROFILE=${2:?}; shift ;;
    --no-models) MODELS=0 ;;
    -h|--help) usage ;;
    *) echo "unknown option $1" >&2; usage ;;
  esac
  shift
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${CABIN_AGENT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/cabin-agent}
VENV=${CABIN_AGENT_VENV:-$ROOT/.venv}
PY=${PYTHON:-python3}
LLAMA_VERSION=0.3.36
say() { printf '\033[1msetup:\033[0m %s\n' "$*" >&2; }

# 1. System packages: PortAudio for sounddevice, espeak-ng (Piper's phonemes, synthetic test voices), sox.
pkgs=(libportaudio2 espeak-ng sox libsox-fmt-all alsa-utils)
# The tests also check the systemd unit (systemd-analyze) and the unit's W^X filter (python3-seccomp).
[ "$DEV" = 1 ] && pkgs+=(systemd python3-seccomp)
need=()
for pkg in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing ${need[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  else
    say "missing system packages: ${need[*]} (run: sudo apt-get install ${need[*]})"
  fi
fi

# 2. The virtual environment.
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
fi
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)

# 3. llama-cpp-python compiles for the CPU it is built on: the wheel is cached per machine type and CPU flags.
cpu_flags=$( (grep -m1 -E '^(flags|Features)' /proc/cpuinfo 2>/dev/null || uname -m) )
cpu_key=$(uname -m)-$(printf '%s' "$cpu_flags" | sha256sum | cut -c1-12)
build_args=${CMAKE_ARGS:-}
[ -n "$build_args" ] && cpu_key=$cpu_key-$(printf '%s' "$build_args" | sha256sum | cut -c1-8)  # an operator's own build
if [ -z "$build_args" ] && grep -qw amx_tile <<<"$cpu_flags"; then
  # -march=native turns on ggml's AMX kernels on Xeons that have AMX, and they die with a general protection
  # fault on the first decode in VMs that do not hand the AMX state to guests (seen on Firecracker). AVX-512
  # still does the work; a head unit (ARM) never has AMX.
  amx_off="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
  build_args="-DCMAKE_C_FLAGS='$amx_off' -DCMAKE_CXX_FLAGS='$amx_off'"
  cpu_key=$cpu_key-noamx
fi
WHEELS="$CACHE/wheels/$cpu_key"
mkdir -p "$WHEELS"
llama_stamp="$VENV/.llama-cpp-build"
if ! "$VENV/bin/python" -c "import llama_cpp" 2>/dev/null \
  || [ "$(cat "$llama_stamp" 2>/dev/null)" != "$LLAMA_VERSION $cpu_key" ]; then
  wheel=$(ls "$WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl 2>/dev/null | head -1 || true)
  if [ -z "$wheel" ]; then
    say "building llama-cpp-python $LLAMA_VERSION for this CPU (about 9 minutes, once; cached in $WHEELS)"
    # --no-cache-dir: pip would hand back a wheel it built before, whatever CMAKE_ARGS or CPU it had.
    CMAKE_ARGS="$build_args" "$VENV/bin/python" -m pip wheel -q --no-deps --no-cache-dir "llama-cpp-python==$LLAMA_VERSION" -w "$WHEELS"
    wheel=$(ls "$WHEELS"/llama_cpp_python-"$LLAMA_VERSION"-*.whl | head -1)
  fi
  "${PIP[@]}" --force-reinstall --no-deps "$wheel"
  echo "$LLAMA_VERSION $cpu_key" > "$llama_stamp"
fi

# 4. The package and its engines; skipped when pyproject.toml has not changed since the last run.
extras=all; [ "$DEV" = 1 ] && extras=all,dev
stamp="$VENV/.cabin-agent-setup"
want="$(sha256sum "$ROOT/pyproject.toml" | cut -c1-16) $extras $ROOT"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  say "installing cabin-agent[$extras]"
  "${PIP[@]}" -e "$ROOT[$extras]"
  echo "$want" > "$stamp"
fi

# 5. Models: verified into a store outside the clone; instant when already there.
if [ "$MODELS" = 1 ]; then
  "$VENV/bin/cabin-agent" models fetch --profile "$PROFILE"
  # A wheel that builds can still crash on this CPU at the first decode: find out here, not in the car.
  # Once per installed wheel: the stamp below says this one decoded.
  gguf=$(ls "$CACHE"/models/qwen*/*.gguf 2>/dev/null | head -1 || true)
  checked="$VENV/.llama-cpp-decodes"
  if [ -n "$gguf" ] && [ "$(cat "$checked" 2>/dev/null)" != "$(cat "$llama_stamp")" ] && ! "$VENV/bin/python" -c '
import sys, llama_cpp
llm = llama_cpp.Llama(sys.argv[1], n_ctx=64, n_threads=1, verbose=False)
llm.eval(llm.tokenize(b"The car is ready."))' "$gguf" 2>/dev/null; then
    say "llama-cpp-python $LLAMA_VERSION from $WHEELS crashes on a first decode of $gguf on this CPU;"
    say "remove $WHEELS and run setup again with CMAKE_ARGS set (e.g. CMAKE_ARGS=-DGGML_NATIVE=OFF)"
    rm -f "$llama_stamp"  # the next run installs the wheel again
    exit 70
  fi
  if [ -n "$gguf" ]; then cp "$llama_stamp" "$checked"; fi
fi
say "ready: $VENV/bin/cabin-agent"

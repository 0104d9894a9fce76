#!/usr/bin/env bash
# Installs cabin-agent as a system service on a head unit (run as root from a clone):
# the `cabin-agent` user, a venv under /opt/cabin-agent with llama-cpp-python built for this board, the unit,
# /etc/cabin-agent/config.yaml (never overwriting a changed one), the model manifest, the chosen model profile,
# then enables and starts the service. `--uninstall` reverses it (state kept unless `--purge`). Idempotent.
# `--root DIR` installs into DIR instead of / and never touches users, systemd or the network (tests, images).
set -euo pipefail

usage() {
  cat >&2 <<'EOF'
usage: scripts/install.sh [--profile pi5|jetson|dev] [--root DIR] [--no-venv] [--no-models] [--no-start]
       scripts/install.sh --uninstall [--purge] [--root DIR]
  --profile NAME  model set and build flavour (default: detected; pi5 on a Raspberry Pi, jetson on a Jetson)
  --root DIR      install into DIR as if it were / (no user creation, no systemctl)
  --no-venv       skip the virtual environment (unit, config and files only)
  --no-models     skip fetching the model profile
  --no-start      do not enable and start the service
environment: PYTHON (>= 3.11, default python3), CMAKE_ARGS (llama.cpp build flags), LLAMA_WHEEL (a prebuilt
  llama-cpp-python wheel), CABIN_AGENT_EXTRAS (override the profile's extras)
  --uninstall     remove what install placed; keeps /var/lib/cabin-agent and a changed config
  --purge         with --uninstall: also remove state, cache, config, credentials and the user
EOF
  exit 64
}

PROFILE=""; ROOT=""; VENV_STEP=1; MODELS=1; START=1; UNINSTALL=0; PURGE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --profile) PROFILE=${2:?--profile needs a name}; shift ;;
    --root) ROOT=${2:?--root needs a directory}; shift ;;
    --no-venv) VENV_STEP=0 ;;
    --no-models) MODELS=0 ;;
    --no-start) START=0 ;;
    --uninstall) UNINSTALL=1 ;;
    --purge) PURGE=1 ;;
    -h|--help) usage ;;
    *) echo "install.sh: unknown option $1" >&2; usage ;;
  esac
  shift
done

SRC=$(cd "$(dirname "$0")/.." && pwd)
if [ -n "$ROOT" ]; then
  mkdir -p "$ROOT"
  ROOT=$(cd "$ROOT" && pwd)
  [ "$ROOT" = / ] && ROOT=""
fi
LIVE=1; [ -n "$ROOT" ] && LIVE=0   # LIVE: acting on this machine (users, systemctl), not on a directory tree
if [ "$LIVE" = 1 ] && [ "$(id -u)" != 0 ]; then
  echo "install.sh: run as root (or use --root DIR)" >&2; exit 77
fi

NAME=cabin-agent
PREFIX=$ROOT/opt/$NAME
VENV=$PREFIX/venv
ETC=$ROOT/etc/$NAME
UNIT_DIR=$ROOT/etc/systemd/system
UNIT=$UNIT_DIR/$NAME.service
DROPIN_DIR=$UNIT_DIR/$NAME.service.d
SHARE=$ROOT/usr/share/$NAME
DOC=$ROOT/usr/share/doc/$NAME
SYSUSERS=$ROOT/usr/lib/sysusers.d/$NAME.conf
TMPFILES=$ROOT/usr/lib/tmpfiles.d/$NAME.conf
STATE=$ROOT/var/lib/$NAME
CACHE=$ROOT/var/cache/$NAME
CREDSTORE=$ROOT/etc/credstore
LLAMA_VERSION=${LLAMA_VERSION:-0.3.36}
PY=${PYTHON:-python3}

say() { printf '\033[1minstall:\033[0m %s\n' "$*" >&2; }
user_exists() { [ "$LIVE" = 1 ] && getent passwd "$NAME" >/dev/null; }
mode_of() { stat -c %a "$1"; }

# The config may carry API keys: root may write it, the service's group may read it, nobody else.
# install_config SRC DEST: DEST gets SRC's bytes with mode 0640, or stricter when DEST already was (an
# admin's 0600 is never loosened), owned by root:cabin-agent on a live system. In an image (--root), the
# group does not exist yet: tmpfiles.d sets it at boot, after sysusers created it (see step 1).
install_config() {
  local mode=0640
  if [ -e "$2" ]; then mode=$(printf '%04o' $(( 8#$(mode_of "$2") & 8#0640 ))); fi
  install -m "$mode" "$1" "$2.tmp"
  if user_exists; then chown "root:$NAME" "$2.tmp"; fi
  mv -f "$2.tmp" "$2"
}

detect_profile() {
  local model=""
  [ -r /proc/device-tree/model ] && model=$(tr -d '\0' </proc/device-tree/model)
  case "$model" in
    *"Raspberry Pi 5"*) echo pi5 ;;
    *Jetson*|*Orin*) echo jetson ;;
    *) if [ -e /etc/nv_tegra_release ]; then echo jetson; else echo dev; fi ;;
  esac
}

# The default config with the installer's choices written in: the profile and, on a Jetson, GPU offload.
render_config() {
  sed -e "s/^  profile: .*/  profile: $PROFILE/" "$SRC/etc/config.yaml" |
    if [ "$PROFILE" = jetson ]; then
      sed -e 's/^# llm:$/llm:/' -e 's/^#   n_gpu_layers: 0$/  n_gpu_layers: -1/'
    else
      cat
    fi
}

# ------------------------------------------------------------------------------------------------ uninstall

if [ "$UNINSTALL" = 1 ]; then
  if [ "$LIVE" = 1 ] && command -v systemctl >/dev/null; then
    systemctl disable --now "$NAME.service" 2>/dev/null || true
  fi
  rm -f "$UNIT" "$DROPIN_DIR/10-jetson.conf"
  rmdir "$DROPIN_DIR" 2>/dev/null || true   # an admin's own override.conf keeps it
  if [ "$LIVE" = 1 ] && command -v systemctl >/dev/null; then systemctl daemon-reload || true; fi
  # The config goes only when it is still the default we placed (dpkg's conffile rule) or with --purge.
  if [ -f "$ETC/config.yaml" ]; then
    if [ "$PURGE" = 1 ] || cmp -s "$ETC/config.yaml" "$SHARE/config.yaml.installed"; then
      rm -f "$ETC/config.yaml"
    else
      say "keeping your changed $ETC/config.yaml"
    fi
  fi
  rm -f "$ETC/config.yaml.new"
  rm -rf "$PREFIX" "$SHARE" "$DOC"
  rm -f "$SYSUSERS" "$TMPFILES"
  if [ "$PURGE" = 1 ]; then
    rm -rf "$ETC" "$STATE" "$CACHE" "$ROOT/var/lib/private/$NAME"
    rm -f "$CREDSTORE/$NAME.meals-api-key" "$CREDSTORE/$NAME.deliveries-api-key"
    if user_exists; then userdel "$NAME" 2>/dev/null || true; fi
    if [ "$LIVE" = 1 ] && getent group "$NAME" >/dev/null; then groupdel "$NAME" 2>/dev/null || true; fi
  else
    rmdir "$ETC" 2>/dev/null || true
    [ -d "$STATE" ] && say "kept $STATE (models, outbox); --purge removes it"
  fi
  say "uninstalled"
  exit 0
fi

# ------------------------------------------------------------------------------------------------ install

PROFILE=${PROFILE:-$(detect_profile)}
case "$PROFILE" in pi5|jetson|dev) ;; *) echo "install.sh: unknown profile $PROFILE (pi5, jetson, dev)" >&2; exit 64 ;; esac
say "profile $PROFILE${ROOT:+, root $ROOT}"

# 1. The user: declared for systemd-sysusers (so images get it at boot too), created now on a live system.
install -d -m 0755 "$(dirname "$SYSUSERS")"
printf 'u %s - "cabin-agent voice agent" /var/lib/%s /usr/sbin/nologin\n' "$NAME" "$NAME" >"$SYSUSERS.tmp"
mv "$SYSUSERS.tmp" "$SYSUSERS"; chmod 0644 "$SYSUSERS"
# Ownership only ("-" keeps the mode): the config becomes readable by the service's group once it exists.
install -d -m 0755 "$(dirname "$TMPFILES")"
printf 'z /etc/%s/config.yaml - root %s -\nz /etc/%s/config.yaml.new - root %s -\n' \
  "$NAME" "$NAME" "$NAME" "$NAME" >"$TMPFILES.tmp"
mv "$TMPFILES.tmp" "$TMPFILES"; chmod 0644 "$TMPFILES"
if [ "$LIVE" = 1 ] && ! getent passwd "$NAME" >/dev/null; then
  if command -v systemd-sysusers >/dev/null; then
    systemd-sysusers "$SYSUSERS"
  else
    useradd --system --user-group --home-dir "/var/lib/$NAME" --no-create-home --shell /usr/sbin/nologin "$NAME"
  fi
  say "created user $NAME"
fi

# 2. Directories. systemd creates State/Cache/Runtime dirs itself; we need state now for the models.
install -d -m 0755 "$PREFIX" "$SHARE/models" "$DOC" "$ETC" "$UNIT_DIR"
install -d -m 0750 "$STATE" "$STATE/models" "$CACHE"
if user_exists; then chown "$NAME:$NAME" "$STATE" "$STATE/models" "$CACHE"; fi
install -d -m 0700 "$CREDSTORE"

# 3. Files that are ours to replace: the unit (local changes belong in drop-ins), the manifest, the docs.
install -m 0644 "$SRC/systemd/$NAME.service" "$UNIT"
if [ "$PROFILE" = jetson ]; then
  install -d -m 0755 "$DROPIN_DIR"
  install -m 0644 "$SRC/systemd/$NAME.service.d/jetson.conf" "$DROPIN_DIR/10-jetson.conf"
else
  rm -f "$DROPIN_DIR/10-jetson.conf"; rmdir "$DROPIN_DIR" 2>/dev/null || true
fi
install -m 0644 "$SRC/models/manifest.yaml" "$SHARE/models/manifest.yaml"
install -m 0644 "$SRC/docs/deploy.md" "$DOC/deploy.md"

# 4. The config: placed when absent; replaced when it is still our previous default; otherwise kept, with the
#    new default next to it. $SHARE/config.yaml.installed remembers what we placed, to tell the cases apart.
new=$(mktemp); trap 'rm -f "$new"' EXIT
render_config >"$new"
if [ ! -f "$ETC/config.yaml" ] || cmp -s "$ETC/config.yaml" "$SHARE/config.yaml.installed"; then
  install_config "$new" "$ETC/config.yaml"
  rm -f "$ETC/config.yaml.new"
elif cmp -s "$ETC/config.yaml" "$new"; then
  rm -f "$ETC/config.yaml.new"
else
  install_config "$new" "$ETC/config.yaml.new"
  say "kept your changed $ETC/config.yaml; the new default is config.yaml.new"
  grep -q "^  profile: $PROFILE\$" "$ETC/config.yaml" ||
    say "warning: $ETC/config.yaml does not select profile $PROFILE (models.profile)"
fi
# A kept config is the admin's: its mode is not changed, but one every local user can read is worth a word.
if [ $(( 8#$(mode_of "$ETC/config.yaml") & 8#0006 )) != 0 ]; then
  say "warning: $ETC/config.yaml is open to every local user (mode $(mode_of "$ETC/config.yaml")) and may hold API keys; fix: chmod 0640 $ETC/config.yaml && chgrp $NAME $ETC/config.yaml"
fi
install -m 0644 "$new" "$SHARE/config.yaml.installed"

# 5. The venv, with llama-cpp-python compiled for this board (cached per CPU), then the package itself.
if [ "$VENV_STEP" = 1 ]; then
  "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    { echo "install.sh: $PY is older than 3.11 (set PYTHON=...)" >&2; exit 69; }
  if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  fi
  PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check)
  case "$PROFILE" in
    jetson)
      # CUDA build for Orin (sm_87); nvcc from JetPack.
      export CMAKE_ARGS=${CMAKE_ARGS:-"-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=87"}
      export CUDACXX=${CUDACXX:-/usr/local/cuda/bin/nvcc}
      extras=whisper,pocketsphinx,silero,webrtcvad ;;
    pi5)
      # Cortex-A76: NEON, dotprod and fp16 arithmetic; OpenMP threads. Native tuning is right when built on the Pi.
      export CMAKE_ARGS=${CMAKE_ARGS:-"-DGGML_NATIVE=ON -DGGML_OPENMP=ON"}
      extras=pocketsphinx,silero,webrtcvad ;;
    *)
      extras=all ;;
  esac
  extras=${CABIN_AGENT_EXTRAS:-$extras}
  cpu_key=$(uname -m)-$( (grep -m1 -E '^(flags|Features)' /proc/cpuinfo 2>/dev/null || uname -m; echo "${CMAKE_ARGS:-}") | sha256sum | cut -c1-12)
  wheels=$CACHE/wheels/$cpu_key
  install -d -m 0755 "$wheels"
  if ! "$VENV/bin/python" -c "import llama_cpp" 2>/dev/null; then
    # LLAMA_WHEEL: a wheel built once on the same board type (image builds, CI) instead of compiling here.
    wheel=${LLAMA_WHEEL:-$(ls "$wheels"/llama_cpp_python-"$LLAMA_VERSION"-*.whl 2>/dev/null | head -1 || true)}
    if [ -z "$wheel" ]; then
      say "building llama-cpp-python $LLAMA_VERSION (${CMAKE_ARGS:-default flags}); once per board, cached in $wheels"
      "$VENV/bin/python" -m pip wheel -q --no-deps "llama-cpp-python==$LLAMA_VERSION" -w "$wheels"
      wheel=$(ls "$wheels"/llama_cpp_python-"$LLAMA_VERSION"-*.whl | head -1)
    fi
    "${PIP[@]}" "$wheel"
  fi
  # A regular (not editable) install: the service must not depend on this clone staying where it is.
  stamp=$VENV/.cabin-agent-install
  want="$( (cat "$SRC/pyproject.toml"; find "$SRC/agent" -type f -name '*.py' -o -type f -name '*.yaml' -o -type f -name '*.j2' | LC_ALL=C sort | xargs cat) | sha256sum | cut -c1-16) $extras"
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    say "installing cabin-agent[$extras] into $VENV"
    "${PIP[@]}" --upgrade "$SRC[$extras]"
    echo "$want" >"$stamp"
  fi
fi

# 6. Models, fetched as the service user into its state directory.
if [ "$MODELS" = 1 ] && [ -x "$VENV/bin/cabin-agent" ]; then
  say "fetching model profile $PROFILE into $STATE/models"
  run_as=(); user_exists && command -v runuser >/dev/null && run_as=(runuser -u "$NAME" --)
  "${run_as[@]}" env STATE_DIRECTORY="$STATE" CACHE_DIRECTORY="$CACHE" CABIN_AGENT_CONFIG="$ETC/config.yaml" \
    CABIN_AGENT_MANIFEST="$SHARE/models/manifest.yaml" HOME="$STATE" \
    "$VENV/bin/cabin-agent" models fetch --profile "$PROFILE"
fi

# 7. Enable and (re)start, so a re-run also picks up new code and a new unit.
if [ "$LIVE" = 1 ] && [ "$START" = 1 ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable "$NAME.service" >/dev/null
  systemctl restart "$NAME.service"
  say "started; see: systemctl status $NAME, journalctl -u $NAME, $VENV/bin/cabin-agent status"
elif [ "$LIVE" = 1 ] && [ "$START" = 1 ]; then
  say "systemd is not running here: enable the service with 'systemctl enable --now $NAME' on the head unit"
fi
say "installed"

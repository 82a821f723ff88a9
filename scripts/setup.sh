#!/usr/bin/env bash
# One-command, idempotent environment setup for vitpe (called by `make setup`).
#
# Creates .venv (Python 3.11), installs the pinned stack from pyproject.toml, builds mmcv 2.1.0 with
# compiled ops from the PyPI source (PyPI ships no wheel of it) and caches that wheel outside the repo,
# then runs a self-check of the OpenMMLab stack. A stamp file makes a second run a quick no-op.
#
# Switches (environment variables):
#   VITPE_MMCV_CUDA=1   build mmcv with CUDA ops (needs nvcc; for GPU clusters). Default: CPU ops.
#   VITPE_CACHE=DIR     where the built mmcv wheel is cached (default: ~/.cache/vitpe).
#   PYTHON=python3.11   interpreter used to create the virtual environment.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3.11}
VENV=.venv
CACHE=${VITPE_CACHE:-$HOME/.cache/vitpe}
CUDA=${VITPE_MMCV_CUDA:-0}
MMCV_VERSION=2.1.0
TORCH_PIN="torch==2.14.1 torchvision==0.29.1"
flavour=$([ "$CUDA" = 1 ] && echo cuda || echo cpu)
WHEELS="$CACHE/wheels/mmcv-$MMCV_VERSION-torch2.14.1-$flavour"

log() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

stamp_key=$(cat pyproject.toml scripts/setup.sh scripts/selfcheck.py | sha256sum | cut -d' ' -f1)-$flavour
if [ -f "$VENV/.vitpe-setup" ] && [ "$(cat "$VENV/.vitpe-setup")" = "$stamp_key" ]; then
  log "environment up to date ($VENV)"; exit 0
fi

command -v "$PYTHON" >/dev/null || die "$PYTHON not found: install Python 3.11 or set PYTHON=..."
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11)' \
  || die "$PYTHON is not Python 3.11"
[ -x "$VENV/bin/python" ] || { log "creating $VENV"; "$PYTHON" -m venv "$VENV"; }
PIP="$VENV/bin/python -m pip --disable-pip-version-check"

log "build tools"
$PIP install -q "pip>=24" "setuptools>=70,<82" wheel ninja psutil
log "torch ($TORCH_PIN)"
$PIP install -q $TORCH_PIN

if ! ls "$WHEELS"/mmcv-$MMCV_VERSION-*.whl >/dev/null 2>&1; then
  log "building mmcv $MMCV_VERSION ($flavour ops) from source; about 17 min on 2 cores, cached afterwards"
  $PIP install -q "mmengine==0.10.7" "opencv-python==4.13.0.92" addict yapf
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  $PIP download -q --no-deps --no-build-isolation --no-binary :all: "mmcv==$MMCV_VERSION" -d "$work"
  tar -xzf "$work"/mmcv-$MMCV_VERSION.tar.gz -C "$work"
  # torch >= 2.14 headers require C++20; mmcv 2.1.0 hard-codes c++14/c++17.
  sed -i -E 's/-std=c\+\+1[47]/-std=c++20/g' "$work/mmcv-$MMCV_VERSION/setup.py"
  grep -q 'std=c++20' "$work/mmcv-$MMCV_VERSION/setup.py" || die "could not patch mmcv setup.py to c++20"
  mkdir -p "$WHEELS.tmp"
  ( cd "$work/mmcv-$MMCV_VERSION" && MMCV_WITH_OPS=1 FORCE_CUDA=$CUDA MAX_JOBS=${MAX_JOBS:-$(nproc)} \
      "$OLDPWD/$VENV/bin/python" -m pip wheel -q --no-build-isolation --no-deps -w "$WHEELS.tmp" . )
  rm -rf "$WHEELS" && mv "$WHEELS.tmp" "$WHEELS"   # publish the cache atomically
fi
$PIP install -q --no-deps "$WHEELS"/mmcv-$MMCV_VERSION-*.whl

log "vitpe and pinned dependencies"
$PIP install -q -e ".[dev]" --find-links "$WHEELS"  # resolve mmcv to the cached wheel, never the sdist
log "self-check"
"$VENV/bin/python" scripts/selfcheck.py || die "self-check failed: the OpenMMLab stack is not usable"
echo "$stamp_key" > "$VENV/.vitpe-setup"
log "done"

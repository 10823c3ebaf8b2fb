#!/usr/bin/env bash
# One-command setup for declip-mm (called by `make install`).
#
# Creates (once per lock-file hash) a virtual environment OUTSIDE the repository, shared by every clone:
#     $DECLIP_CACHE/envs/<hash>/            hash = sha256(lock.txt + constraints.txt + python version)
# builds mmcv 2.1.0 with its compiled ops once and caches the wheel, keyed by the torch build:
#     $DECLIP_CACHE/wheels/mmcv-2.1.0/<torch version>-<cpu|cuda>/mmcv-2.1.0-*.whl
# links it as ./.venv, points it at this clone (editable install, --no-deps) and checks the imports.
# A second run finds the finished environment (stamp file) and only re-points and re-checks it.
#
# Environment variables:
#     DECLIP_CACHE   cache root (default: ~/.cache/declip-mm)
#     PYTHON         interpreter used to create the environment (default: python3)
#     MMCV_CUDA      1 = build mmcv's CUDA ops, 0 = CPU ops only. Default: 1 when both `nvcc` and a CUDA
#                    GPU are visible to torch, else 0.
set -Eeuo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${DECLIP_CACHE:-$HOME/.cache/declip-mm}"
PYTHON="${PYTHON:-python3}"
CONSTRAINTS="$REPO/requirements/constraints.txt"
LOCK="$REPO/requirements/lock.txt"
MMCV_VERSION=2.1.0

step="start"
log=""
fail() {
    echo "" >&2
    echo "declip-mm install FAILED during: $step" >&2
    if [ -n "$log" ] && [ -f "$log" ]; then
        echo "--- last lines of $log ---" >&2
        tail -n 25 "$log" >&2
        echo "--- full log: $log ---" >&2
    fi
    exit 1
}
trap fail ERR
say() { echo "[declip-mm install] $*"; }
run_logged() { "$@" >>"$log" 2>&1; }

step="checking the interpreter ($PYTHON)"
command -v "$PYTHON" >/dev/null || { echo "declip-mm install: '$PYTHON' not found; set PYTHON=/path/to/python3.11" >&2; exit 1; }
PYVER="$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"

hash="$(cat "$LOCK" "$CONSTRAINTS" <(echo "$PYVER") | sha256sum | cut -c1-16)"
ENV="$CACHE/envs/py$PYVER-$hash"
STAMP="$ENV/.declip-mm-complete"
mkdir -p "$CACHE/envs" "$CACHE/logs"
log="$CACHE/logs/install-py$PYVER-$hash.log"
PIP=("$ENV/bin/python" -m pip --disable-pip-version-check)

if [ ! -f "$STAMP" ]; then
    say "creating environment $ENV (first time for this lock file; log: $log)"
    : >"$log"
    rm -rf "$ENV"

    step="creating the virtual environment"
    run_logged "$PYTHON" -m venv "$ENV"

    step="installing torch (pinned by requirements/constraints.txt)"
    say "$step"
    run_logged "${PIP[@]}" install -c "$CONSTRAINTS" "setuptools<81" wheel ninja torch torchvision

    TORCH_VERSION="$("$ENV/bin/python" -c 'import torch; print(torch.__version__)')"
    if [ -z "${MMCV_CUDA:-}" ]; then
        MMCV_CUDA=0
        if command -v nvcc >/dev/null && "$ENV/bin/python" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
            MMCV_CUDA=1
        fi
    fi
    flavour=$([ "$MMCV_CUDA" = 1 ] && echo cuda || echo cpu)
    WHEELS="$CACHE/wheels/mmcv-$MMCV_VERSION/torch-$TORCH_VERSION-py$PYVER-$flavour"
    mkdir -p "$WHEELS"

    if ! ls "$WHEELS"/mmcv-"$MMCV_VERSION"-*.whl >/dev/null 2>&1; then
        step="building mmcv $MMCV_VERSION with $flavour ops (about 16 minutes on 2 cores, once per torch build)"
        say "$step"
        build="$(mktemp -d)"
        run_logged "${PIP[@]}" download --no-deps --no-binary :all: --no-build-isolation -d "$build" "mmcv==$MMCV_VERSION"
        tar -xzf "$build"/mmcv-"$MMCV_VERSION".tar.gz -C "$build"
        # torch >= 2.10 headers need C++20; mmcv 2.1.0 hard-codes -std=c++17 (and c++14 for old torch).
        sed -i 's/-std=c++17/-std=c++20/g' "$build/mmcv-$MMCV_VERSION/setup.py"
        (cd "$build/mmcv-$MMCV_VERSION" && run_logged env MMCV_WITH_OPS=1 FORCE_CUDA="$MMCV_CUDA" \
            MAX_JOBS="${MAX_JOBS:-$(nproc)}" "${PIP[@]}" wheel --no-deps --no-build-isolation -w "$build/dist" .)
        whl="$(ls "$build"/dist/mmcv-"$MMCV_VERSION"-*.whl)"
        step="checking that the built mmcv wheel contains compiled ops (tools/install/check_mmcv_wheel.py)"
        run_logged "$ENV/bin/python" "$REPO/tools/install/check_mmcv_wheel.py" "$whl"
        mv "$whl" "$WHEELS/"
        rm -rf "$build"
    else
        cached=("$WHEELS"/mmcv-"$MMCV_VERSION"-*.whl)
        whl="${cached[0]}"
        say "using cached mmcv wheel $whl"
        step="checking that the cached mmcv wheel contains compiled ops (delete $whl to rebuild it)"
        run_logged "$ENV/bin/python" "$REPO/tools/install/check_mmcv_wheel.py" "$whl"
    fi

    step="installing the locked stack (requirements/lock.txt)"
    say "$step"
    run_logged "${PIP[@]}" install -c "$CONSTRAINTS" --find-links "$WHEELS" -r "$LOCK"
    touch "$STAMP"
fi

step="linking .venv and pointing the environment at this clone"
ln -sfn "$ENV" "$REPO/.venv"
: >"$log.repoint"
log="$log.repoint"
run_logged "${PIP[@]}" install --no-deps --no-build-isolation -e "$REPO"

step="verifying imports (mmcv.ops, mmdet.models, mmseg.models, open_clip, timm, diffusers, declip_mm)"
run_logged "$ENV/bin/python" - <<'EOF'
import importlib, sys
for name in ['torch', 'mmcv.ops', 'mmdet.models', 'mmseg.models', 'open_clip', 'timm', 'diffusers', 'declip_mm']:
    importlib.import_module(name)
from mmcv.ops import RoIAlign, nms  # compiled ops, not the lite build
import torch, mmcv, mmdet, mmseg, open_clip, timm, diffusers
print('torch', torch.__version__, '| mmcv', mmcv.__version__, '| mmdet', mmdet.__version__, '| mmseg', mmseg.__version__,
      '| open_clip', open_clip.__version__, '| timm', timm.__version__, '| diffusers', diffusers.__version__)
EOF
say "ready: $(tail -n 1 "$log")"
say "environment: $ENV (linked as .venv)"

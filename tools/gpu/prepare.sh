#!/usr/bin/env bash
# Build, on this machine, the wheelhouse the GPU machine needs: the pure-Python packages (and two small compiled
# ones) of the OpenMMLab stack that its image lacks, for Python 3.12 / manylinux x86_64, with the versions of
# requirements/lock.txt. The GPU machine has python3 3.12 with torch 2.11, timm, numpy, scipy, opencv (headless),
# transformers, ... but no mmengine / mmcv / mmdet / mmseg / open_clip, and no network.
#
#   bash tools/gpu/prepare.sh [OUT_DIR]        # default .whl (git-ignored), replaced as a whole
#
# Then carry it and the sample photos with the device tool and run tools/gpu/run.sh there:
#   carry: [".whl", "data/sample"]   command: "bash tools/gpu/run.sh"
#
# What goes in (pip download --no-deps, so nothing else can slip in; one version of each):
#   wheels for cp312 manylinux: pycocotools, shapely; pure-Python wheels: mmengine, mmdet, mmsegmentation,
#   open_clip_torch, timm (pinned: DeCLIPViT reads timm's EVA internals), addict, yapf, platformdirs, termcolor,
#   prettytable, wcwidth, terminaltables, ftfy, lvis;
#   mmcv 2.1.0: PyPI has only its source, so it is built here into a pure-Python wheel (MMCV_WITH_OPS=0), and its
#   source archive is kept next to it for run.sh to build the compiled CUDA ops there (--mmcv-ops build).
# pip's cache makes a second run take seconds. Size: about 20 MB (the device tool carries at most 64 MiB).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${1:-$REPO/.whl}
PY=${PYTHON:-$REPO/.venv/bin/python}
[ -x "$PY" ] || PY=python3
LOCK=$REPO/requirements/lock.txt
pin() { local v; v=$(grep -i "^$1==" "$LOCK" | head -1 | cut -d= -f3); [ -n "$v" ] || { echo "prepare.sh: $1 is not in $LOCK" >&2; exit 2; }; echo "$1==$v"; }

BINARY=(pycocotools shapely)
PURE=(mmengine mmdet mmsegmentation open_clip_torch timm addict yapf platformdirs termcolor prettytable wcwidth
      terminaltables ftfy lvis)
TMP=$(mktemp -d "${OUT%/}.tmp.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  PLATFORMS+=(--platform "$p")
done
pip_quiet() { "$PY" -m pip "$@" 2> >(grep -v 'is ignored: it is neither a file nor a directory' >&2); }
for name in "${BINARY[@]}" "${PURE[@]}"; do
  pip_quiet download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${PLATFORMS[@]}" -d "$TMP" "$(pin "$name")"
done
# mmcv: source archive, and a pure-Python wheel built from it (MMCV_WITH_OPS=0 names it mmcv_lite; it installs the
# same 'mmcv' package without compiled ops; run.sh adds them, or a stub that names them when called)
pip_quiet download -q --no-deps --no-binary=:all: -d "$TMP" "$(pin mmcv)"
SDIST=$(ls "$TMP"/mmcv-*.tar.gz)
mkdir "$TMP/build"
tar -xzf "$SDIST" -C "$TMP/build"
(cd "$TMP"/build/mmcv-* && MMCV_WITH_OPS=0 pip_quiet wheel -q --no-deps --no-build-isolation -w "$TMP" .)
rm -rf "$TMP/build"
ls "$TMP"/mmcv_lite-*-none-any.whl >/dev/null   # a pure wheel, or fail here
rm -rf "$OUT"
mv "$TMP" "$OUT"
trap - EXIT
echo "prepare.sh: $(ls "$OUT" | wc -l) files, $(du -sh "$OUT" | cut -f1) in $OUT"
ls "$OUT"

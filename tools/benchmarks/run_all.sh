#!/usr/bin/env bash
# Every row of docs/benchmarks.md, in one go. Run it ALONE on an idle machine (nothing else running: no tests, no
# builds, no other benchmark), from the repository root:
#
#   bash tools/benchmarks/run_all.sh [--dry-run] [--only NAME ...] [--markdown FILE] [--allow-busy]
#
# Each benchmark script measures the matmul peak of every precision it uses, watches the load around every
# measurement (tools/benchmarks/harness.py: busy when the 1-min load average exceeds the torch threads + 0.5, or
# other processes take > 10 % of the CPUs) and refuses to write rows measured on a busy machine (exit 3): its
# rows then stay in work_dirs/benchmarks/run-<time>/<name>.json only. --allow-busy writes them, marked busy.
# Expected duration on 2 idle AMD EPYC cores: about 35 minutes (each step prints its own).
set -uo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO"
PY=${PYTHON:-$REPO/.venv/bin/python}
MD=docs/benchmarks.md
DRY=0
EXTRA=()
ONLY=()
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --allow-busy) EXTRA+=(--allow-busy) ;;
    --markdown) MD=$2; shift ;;
    --only) shift; while [ $# -gt 0 ] && [ "${1#--}" = "$1" ]; do ONLY+=("$1"); shift; done; continue ;;
    *) echo "run_all.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
JSON_DIR=work_dirs/benchmarks/run-$(date +%Y%m%d-%H%M%S)
[ "$DRY" = 1 ] || mkdir -p "$JSON_DIR"
FAILED=()
START=$SECONDS

run() {  # run NAME SCRIPT ARGS...
  local name=$1 script=$2
  shift 2
  if [ ${#ONLY[@]} -gt 0 ] && [[ ! " ${ONLY[*]} " =~ " $name " ]]; then return; fi
  local cmd=(env PYTHONPATH="$REPO" "$PY" "$script" "$@" --markdown "$MD" --json "$JSON_DIR/$name.json" "${EXTRA[@]}")
  echo "== $name: ${cmd[*]:2}"
  [ "$DRY" = 1 ] && return
  local t=$SECONDS
  "${cmd[@]}"
  local rc=$?
  echo "== $name: exit $rc after $((SECONDS - t)) s"
  [ $rc = 0 ] || FAILED+=("$name (exit $rc)")
}

run backbone tools/benchmark_backbone.py --models ViT-B-16 EVA02-B-16 --sizes 224 448 560 672 --dtypes fp32 bf16 \
  --repeats 3 --compare-attention --profile
run inference tools/benchmark_inference.py --images 3 --repeats 3 --dtypes fp32 bf16 --profile
run features tools/benchmark_features.py --images 3 --repeats 3 --dtypes fp32 bf16 --profile
run vocabulary tools/benchmark_vocabulary.py --classes 20 2000 --cli
run detection tools/benchmark_detection.py --batch 2 --repeats 3 --profile
run catseg tools/benchmark_catseg.py --vocabulary voc20 --batch 1 --repeats 2 --profile
run distill-tiny tools/benchmark_distill.py --configs configs/distill/declip_tiny-vit_tiny-dinov2_sample-photos_cpu.py \
  --batch 2 --repeats 3 --profile
run distill-small tools/benchmark_distill.py --configs configs/distill/declip-cvpr_eva02-b16_dinov2-b14reg_coco-560_6e.py \
  configs/distill/declip_eva02-b16_dinov2-b14reg_sd15_coco-560_6e.py --student-size 224 --batch 2 --repeats 3 --profile
run distill-paper tools/benchmark_distill.py --configs configs/distill/declip-cvpr_eva02-b16_dinov2-b14reg_coco-560_6e.py \
  --batch 2 --repeats 2 --cache off

[ "$DRY" = 1 ] && exit 0
echo
echo "run_all.sh: $(( (SECONDS - START) / 60 )) min $(( (SECONDS - START) % 60 )) s; rows in $MD, JSON in $JSON_DIR"
if [ ${#FAILED[@]} -gt 0 ]; then
  echo "run_all.sh: not written (busy machine = exit 3, see above): ${FAILED[*]}"
  exit 1
fi

#!/usr/bin/env bash
# The GPU-only checks and measurements, in stages that each fit one call of a lent GPU machine (10 minutes).
#
#   bash scripts/gpu_session.sh STAGE [STAGE ...]      results: $OUT/STAGE.log and $OUT/STAGE.json
#
# Stages:
#   tests             the CUDA-only tests (pytest -m cuda)
#   bench-base        ViT-B/16, batch 256, bf16: vitmae (compiled: the pretrain default, and eager) against
#                     transformers (eager and compiled), same run; then vitmae --fp8 (needs torchao: carry
#                     its wheel in .whl/) against transformers
#   bench-large       ViT-L/16, batch 128, bf16, likewise
#   pipeline          the input pipeline on ~500x375 JPEGs: PIL in workers against batched decode + crops on
#                     the GPU, alone and end to end with the ViT-B/16 step
#   label-efficiency  the full-scale Fashion-MNIST experiment (docs/results.md); needs the IDX files in
#                     .gpu/fashion-mnist (carried) unless the dataset-fashion-mnist package is installed
#
# Runs from the repository root with PYTHONPATH=src (no install needed where torch, timm, transformers,
# safetensors, PyYAML, tqdm and Pillow are present). Wheels carried in .whl/ (torchao, for --fp8) are
# installed into /tmp/site first.
set -uo pipefail
export PYTHONPATH=src PYTHONUNBUFFERED=1
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=src:/tmp/site
fi
OUT=${OUT:-runs/gpu}
PY=${PY:-python3}
mkdir -p "$OUT"

run() {  # echo a command into the stage's log, then run it
    echo "+ $*" | tee -a "$LOG"
    "$@" 2>&1 | tee -a "$LOG"
}

environment() {
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    nproc
    "$PY" -c "import sys, torch, torchvision, timm, transformers; print('python', sys.version.split()[0], \
'torch', torch.__version__, 'torchvision', torchvision.__version__, 'timm', timm.__version__, \
'transformers', transformers.__version__)"
}

merge_json() {  # merge_json OUTPUT NAME=FILE ... -> {"NAME": contents, ...}
    local target=$1; shift
    "$PY" - "$target" "$@" <<'EOF'
import json, sys
merged = {}
for item in sys.argv[2:]:
    name, path = item.split("=", 1)
    try:
        merged[name] = json.load(open(path))
    except (OSError, ValueError) as err:
        merged[name] = {"error": str(err)}
json.dump(merged, open(sys.argv[1], "w"), indent=2)
EOF
}

bench() {  # bench MODEL BATCH
    local model=$1 batch=$2 tmp
    tmp=$(mktemp -d)
    run "$PY" -m vitmae bench --device cuda --model "$model" --batch-size "$batch" --precision bf16 \
        --compare hf,hf-compiled --steps 20 --warmup 5 --json "$tmp/compiled.json"
    run "$PY" -m vitmae bench --device cuda --model "$model" --batch-size "$batch" --precision bf16 \
        --no-compile --steps 20 --warmup 5 --json "$tmp/eager.json"
    run "$PY" -m vitmae bench --device cuda --model "$model" --batch-size "$batch" --precision bf16 \
        --fp8 --compare hf --steps 20 --warmup 5 --json "$tmp/fp8.json"
    merge_json "$OUT/$STAGE.json" compiled="$tmp/compiled.json" eager="$tmp/eager.json" fp8="$tmp/fp8.json"
}

for STAGE in "$@"; do
    LOG="$OUT/$STAGE.log"
    : >"$LOG"
    environment >>"$LOG" 2>&1
    case "$STAGE" in
    tests)
        run "$PY" -m pytest -q -p no:cacheprovider -m cuda tests/train tests/data tests/model tests/tasks tests/test_bench.py
        ;;
    bench-base)
        bench mae_vit_base_patch16 256
        ;;
    bench-large)
        bench mae_vit_large_patch16 128
        ;;
    pipeline)
        jpegs=/tmp/vitmae-jpegs
        [ -d "$jpegs" ] || run "$PY" scripts/make_jpeg_folder.py "$jpegs" --count 10000
        tmp=$(mktemp -d)
        for where in workers device; do
            run "$PY" -m vitmae bench --device cuda --model mae_vit_base_patch16 --batch-size 256 --precision bf16 \
                --data "$jpegs" --augment-on "$where" --num-workers 16 --steps 30 --warmup 5 --json "$tmp/$where.json"
        done
        merge_json "$OUT/$STAGE.json" workers="$tmp/workers.json" device="$tmp/device.json"
        ;;
    label-efficiency)
        fmnist=/usr/share/datasets/fashion-mnist
        if [ ! -d "$fmnist" ] && [ -d .gpu/fashion-mnist ]; then mkdir -p "$fmnist" && cp .gpu/fashion-mnist/* "$fmnist"/; fi
        # In the repository, so that a second call on the same (still warm) machine resumes the finished parts.
        run "$PY" -m vitmae label-efficiency --scale full --num-workers 12 --output runs/label-efficiency-full
        cp runs/label-efficiency-full/metrics.json "$OUT/$STAGE.json" 2>/dev/null
        cp runs/label-efficiency-full/report.md "$OUT/label-efficiency-report.md" 2>/dev/null
        ;;
    *)
        echo "unknown stage $STAGE" >&2
        exit 2
        ;;
    esac
done

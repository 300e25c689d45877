#!/usr/bin/env bash
# The measurements and checks that need a GPU, in stages that each fit ONE command of a lent GPU machine
# (at most 10 minutes a command; an H200 is lent for about 15 minutes in all, its start-up included).
#
#   bash scripts/gpu_session.sh standing            the speed numbers, in under 9 minutes (run it first)
#   bash scripts/gpu_session.sh quality             label efficiency (Fashion-MNIST), then dense transfer
#                                                   (fashion-scenes); a next call continues where it stopped
#   bash scripts/gpu_session.sh tests               the CUDA-only tests alone
#   bash scripts/gpu_session.sh video               the video MAE's step against transformers' VideoMAE
#                                                   (about 4 minutes: in the time `standing` leaves)
#   bash scripts/gpu_session.sh --dry-run STAGE     every piece at toy size on the CPU (tests/test_gpu_script.py)
#
# With the GPU tool: run(command="bash scripts/gpu_session.sh standing", carry=[".whl", ".gpu"],
# timeout_s=560); then the same with `quality` (QUALITY_SCALE=full for the full schedule, in several calls).
#
# Results, in $OUT (default runs/gpu): STAGE.json, rewritten as soon as each piece ends (so a command cut
# off at its limit still returns the pieces that finished: each with status, seconds, predicted_s,
# timeout_s and its result), and STAGE.log; `quality` adds quality-report.md, quality-metrics.json, its
# two plots, dense-report.md and dense-metrics.json. At most 8 files, as the GPU tool returns at most 8.
#
# Every piece runs under its own `timeout`, capped at what is left of the stage's budget ($BUDGET
# seconds, default 525: the tool's call gets timeout_s 560), and a piece with under $MIN_PIECE_S
# seconds left is recorded as skipped: one slow piece cannot eat the rest. The predictions next to each
# piece are for an H200 (the same Hopper chip as the H100 of REFERENCE.md, same bf16 peak), compile time
# included; docs/benchmarks.md ("How to run it on a GPU") has the same table.
#
# Needs, next to the checkout (git-ignored, carried by the GPU tool; `make gpu-carry` builds both):
#   .whl/               wheels installed into /tmp/site first: torchao (the optional --fp8 piece, and the
#                       CUDA fp8 test; both skip without it)
#   .gpu/fashion-mnist/ the four Fashion-MNIST IDX files, for `quality` where the dataset-fashion-mnist
#                       package is not installed (copied to /usr/share/datasets/fashion-mnist)
#
# The dry run (--dry-run STAGE) runs the same pieces with the same command lines on the CPU, with toy
# sizes APPENDED to each command line (the CLI keeps the last value of an option): a tiny model and
# batch, 16 JPEG files, the `tiny` label-efficiency scale, and `pytest --collect-only` for the CUDA tests.
# It sets TORCHDYNAMO_DISABLE=1: torch.compile then returns the model unchanged, so every flag and code
# path is taken but nothing compiles (that would take minutes on a 2-core CPU). On an idle 2-core CPU the
# standing dry run takes 47 s, the quality one 9 s.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 2
DRY=0
if [ "${1:-}" = "--dry-run" ]; then
    DRY=1
    shift
fi
if [ $# -eq 0 ]; then
    echo "usage: bash scripts/gpu_session.sh [--dry-run] standing|quality|tests|video ..." >&2
    exit 2
fi

PY=${PY:-python3}
OUT=${OUT:-runs/gpu}
# The label-efficiency experiment's command (everything but its options). ONE place to change when it moves.
LABEL_EFFICIENCY=${LABEL_EFFICIENCY:-"$PY experiments/label_efficiency.py"}
DENSE_TRANSFER=${DENSE_TRANSFER:-"$PY experiments/dense_transfer.py"}
QUALITY_SCALE=${QUALITY_SCALE:-gpu}  # `full` takes two or three calls (docs/results.md)
BUDGET=${BUDGET:-525}          # seconds per stage, for all its pieces; the tool's timeout_s is 560
MIN_PIECE_S=${MIN_PIECE_S:-20} # a piece with less than this left is skipped
FMNIST=${FMNIST:-/usr/share/datasets/fashion-mnist}
JPEG_COUNT=6000                # (steps 20 + 1) x 256 = 5,376 images per pass of the pipeline bench
if [ "$DRY" = 1 ]; then
    # A scratch folder per dry run, removed at the end (unless WORK was given).
    if [ -z "${WORK:-}" ]; then
        WORK=$(mktemp -d /tmp/vitmae-gpu-dry.XXXXXX)
        trap 'rm -rf "$WORK"' EXIT
    fi
    QUALITY_DIR=${QUALITY_DIR:-$WORK/label-efficiency}
    DENSE_DIR=${DENSE_DIR:-$WORK/dense-transfer}
    SITE=$WORK/site
    export TORCHDYNAMO_DISABLE=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
    TOY_MODEL=(--device cpu --model mae_vit_tiny_patch16 --img-size 32 --patch-size 8 --embed-dim 32 --depth 1
               --num-heads 2 --decoder-embed-dim 32 --decoder-depth 1 --decoder-num-heads 2 --precision fp32
               --compile)
    TOY_BENCH=("${TOY_MODEL[@]}" --batch-size 4 --steps 2 --warmup 1)
    TOY_PIPELINE=("${TOY_BENCH[@]}" --num-workers 1)
    TOY_PLAN=(--device cpu --model mae_vit_tiny_patch16 --img-size 32 --patch-size 8 --embed-dim 32 --depth 1
              --num-heads 2 --decoder-embed-dim 32 --decoder-depth 1 --decoder-num-heads 2 --precision fp32
              --batch-size 4)
    TOY_JPEGS=(--count 16 --workers 1)
    TOY_FSDP=("${TOY_MODEL[@]}" --batch-size 4 --max-steps 2 --save-every-steps 1 --num-workers 1 --heldout-samples 4)
    TOY_VIDEO=(--device cpu --model videomae_vit_micro_patch8_32 --in-chans 3 --embed-dim 32 --depth 1 --num-heads 2
               --decoder-embed-dim 32 --decoder-depth 1 --decoder-num-heads 2 --num-frames 4 --precision fp32
               --batch-size 2 --steps 2 --warmup 1)
    TOY_TESTS=(--collect-only)
    TOY_QUALITY=(--scale tiny --device cpu --num-workers 0)
    TOY_DENSE=(--scale tiny --device cpu --num-workers 0)
    GPU_NAME="dry run"
else
    WORK=${WORK:-/tmp/vitmae-gpu}  # kept between calls on the same (still warm) machine
    QUALITY_DIR=${QUALITY_DIR:-runs/label-efficiency-$QUALITY_SCALE}
    DENSE_DIR=${DENSE_DIR:-runs/dense-transfer-gpu}
    SITE=/tmp/site
    TOY_MODEL=() TOY_BENCH=() TOY_PIPELINE=() TOY_PLAN=() TOY_JPEGS=() TOY_TESTS=() TOY_QUALITY=() TOY_DENSE=()
    TOY_FSDP=() TOY_VIDEO=()
    GPU_NAME=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1)
fi
JPEGS=$WORK/jpegs
mkdir -p "$OUT" "$WORK"
export PYTHONPATH=$ROOT/src PYTHONUNBUFFERED=1 TQDM_MININTERVAL=${TQDM_MININTERVAL:-10}
# Compiled kernels and graphs are cached across the pieces' processes (and calls on a warm machine): the
# pipeline pieces recompile the ViT-B/16 step of piece 2 from this cache in seconds.
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-$WORK/inductor} TORCHINDUCTOR_FX_GRAPH_CACHE=1 \
    TORCHINDUCTOR_AUTOGRAD_CACHE=1
# MFU needs the device's bf16 peak: 790 TFLOP/s measured on the lent H200 (the bench knows the H100's).
PEAK=()
case "$GPU_NAME" in
*H200* | "dry run") PEAK=(--peak-tflops "${PEAK_TFLOPS:-790}") ;;
*) [ -n "${PEAK_TFLOPS:-}" ] && PEAK=(--peak-tflops "$PEAK_TFLOPS") ;;
esac

helper() { "$PY" scripts/gpu_record.py "$@"; }
now() { date +%s.%N; }

# piece NAME PREDICTED_S TIMEOUT_S RESULT_JSON|- AFTER_FUNCTION|- COMMAND...
# Runs COMMAND under `timeout` (capped at what is left of the budget), its output into the stage's log
# (and $WORK/NAME.log), calls AFTER_FUNCTION (which may write RESULT_JSON), then records the piece in
# $STAGE_JSON at once. TIMEOUT_FOREGROUND=1 signals only the command itself (trainers then save a
# checkpoint and stop cleanly; their data-loader workers follow), else its whole process group.
piece() {
    local name=$1 predicted=$2 limit=$3 result=$4 after=$5
    shift 5
    local left=$((DEADLINE - SECONDS)) start rc status seconds
    if ((left < MIN_PIECE_S)); then
        echo "=== $name: skipped, ${left} s left of the stage's ${BUDGET} s" | tee -a "$LOG"
        helper record "$STAGE_JSON" "$name" --status "skipped: out of time" --seconds 0 --predicted "$predicted" \
            --timeout "$limit"
        return 0
    fi
    ((limit > left)) && limit=$left
    echo "=== $name: predicted ${predicted} s, timeout ${limit} s, ${left} s left of the stage" | tee -a "$LOG"
    echo "+ $*" | tee -a "$LOG"
    local fg=()
    [ "${TIMEOUT_FOREGROUND:-0}" = 1 ] && fg=(--foreground)
    start=$(now)
    timeout "${fg[@]}" -k 20 "$limit" "$@" 2>&1 | tee "$WORK/$name.log" >>"$LOG"
    rc=${PIPESTATUS[0]}
    seconds=$(awk -v a="$start" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
    case $rc in
    0) status=ok ;;
    124 | 137) status="timeout after ${limit} s" ;;
    *) status="failed (exit $rc)" ;;
    esac
    [ "$after" != - ] && "$after"
    local result_args=()
    [ "$result" != - ] && [ -f "$result" ] && result_args=(--result "$result")
    helper record "$STAGE_JSON" "$name" --status "$status" --seconds "$seconds" --predicted "$predicted" \
        --timeout "$limit" "${result_args[@]}"
    echo "=== $name: $status in ${seconds} s (predicted ${predicted} s)" | tee -a "$LOG"
    tail -n 15 "$WORK/$name.log"  # the tool returns the end of stdout: show each piece's last lines
    PIECE_STATUS=$status
}

skip() {  # skip NAME PREDICTED REASON
    echo "=== $1: skipped: $3" | tee -a "$LOG"
    helper record "$STAGE_JSON" "$1" --status "skipped: $3" --seconds 0 --predicted "$2"
}

WHEELS=("$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE")

# -- the pieces ------------------------------------------------------------------------------------------

# vitmae bench, ViT-B/16 at 224 px, bf16 (the toy model on the CPU in the dry run).
BENCH_B=(--device cuda --model mae_vit_base_patch16 --batch-size 256 --precision bf16 "${PEAK[@]}")
BENCH_L=(--device cuda --model mae_vit_large_patch16 --batch-size 128 --precision bf16 "${PEAK[@]}")

cuda_tests_after() {
    helper tests-summary "$WORK/cuda_tests.json" --junit "$WORK/cuda_tests.xml" --log "$WORK/cuda_tests.log"
}

cuda_tests() {
    # Every test file that marks a test `cuda`; `-m cuda` runs only those tests.
    local files
    mapfile -t files < <(grep -rlE "pytest\.mark\.cuda" tests --include='test_*.py' | sort)
    if ! "$PY" -c "import pytest" 2>/dev/null; then
        skip cuda_tests 110 "pytest is not installed"
        return
    fi
    # Predicted 110 s: collection 10 s (imports torch, transformers, timm, scikit-image); the pre-training
    # CLI run on a JPEG folder (process start 8 s, compiling a 1-block model ~15 s, 30 tiny epochs) ~35 s;
    # the fp8 engine test (two 8-step compiled runs; skipped without torchao) ~30 s; compiled step against
    # eager fp32 ~12 s; `vitmae bench` on the GPU (compiles a small model) ~15 s; nvJPEG against libjpeg 3 s.
    piece cuda_tests 110 170 "$WORK/cuda_tests.json" cuda_tests_after \
        "$PY" -m pytest -q -p no:cacheprovider -m cuda --junitxml "$WORK/cuda_tests.xml" "${TOY_TESTS[@]}" \
        "${files[@]}"
}

standing() {
    if compgen -G ".whl/*.whl" >/dev/null; then
        # Predicted 5 s: pip unpacks one 3.4 MB wheel, offline.
        piece wheels 5 60 - - "${WHEELS[@]}" .whl/*.whl
    fi

    # 1. Environment. Predicted 10 s: importing torch, transformers and timm once, nvidia-smi.
    piece environment 10 45 "$WORK/environment.json" - "$PY" scripts/gpu_record.py environment \
        "$WORK/environment.json"

    # 2. ViT-B/16, batch 256, bf16: vitmae compiled (as `vitmae pretrain` runs it) against transformers
    #    eager and compiled, same weights, batch and noise, interleaved; peak memory, MFU.
    #    Predicted 140 s: process start and imports 8 s; both models built and on the GPU 4 s; vitmae's
    #    first step compiles forward + backward (dynamo, AOT autograd, Inductor, Triton on 16 cores) ~50 s;
    #    transformers eager warm-up 1 s; transformers compiled ~65 s (a larger graph: separate q/k/v,
    #    its attention dispatch); 15 interleaved rounds x (57 + 82 + 63 ms; REFERENCE.md's H100 figures:
    #    256 / 3,127 and 256 / 4,086 img/s, official-style compiled 256 / 4,458) = 3 s; warm-up and
    #    peak-memory steps 2 s. The 40-90 s usual for compiling a ViT-B/L training step is the risk: the
    #    timeout leaves 70 s over the prediction.
    piece vit_b16 140 210 "$WORK/vit_b16.json" - \
        "$PY" -m vitmae bench "${BENCH_B[@]}" --compare hf,hf-compiled --steps 15 --warmup 3 \
        "${TOY_BENCH[@]}" --json "$WORK/vit_b16.json"

    # 3. ViT-L/16, batch 128, bf16: vitmae compiled against transformers eager.
    #    Predicted 100 s: start 8 s; building ~330 M parameters twice 8 s; compiling 24 + 8 blocks ~70 s
    #    (the repeated blocks' Triton kernels come from the in-process cache); 15 rounds x (59 + 91 ms;
    #    REFERENCE.md: 128 / 2,158 official-style compiled, 128 / 1,403 transformers) = 2.3 s; warm-up,
    #    peak memory 2 s.
    piece vit_l16 100 160 "$WORK/vit_l16.json" - \
        "$PY" -m vitmae bench "${BENCH_L[@]}" --compare hf --steps 15 --warmup 3 "${TOY_BENCH[@]}" \
        --json "$WORK/vit_l16.json"

    # 4. The input pipeline on ~500x375 JPEG files (quality 90), batched nvJPEG decode + crops on the GPU:
    #    alone, then end to end with the ViT-B/16 step (compiled, as pretrain runs it).
    #    JPEG files: predicted 10 s (6,000 files at ~4 ms each on 16 processes; made once per machine).
    if [ -f "$JPEGS/.complete-$JPEG_COUNT" ]; then
        skip jpegs 10 "reused $JPEGS"
    else
        piece jpegs 10 60 - - "$PY" scripts/make_jpeg_folder.py "$JPEGS" --count "$JPEG_COUNT" "${TOY_JPEGS[@]}" \
            && [ "$PIECE_STATUS" = ok ] && touch "$JPEGS/.complete-$JPEG_COUNT"
    fi
    #    Predicted 60 s: start 8 s; the step of piece 2, recompiled from the Inductor cache ~15 s, timed
    #    20 steps 1.5 s; 16 workers start 3 s; 21 batches of 256 decoded at >= 5,000 img/s (REFERENCE.md:
    #    a per-image GPU decode loop 4,866 img/s) 1 s; a second model (cache again) ~15 s and 21 batches
    #    end to end 1.5 s; slack 15 s.
    piece pipeline_device 60 110 "$WORK/pipeline_device.json" - \
        "$PY" -m vitmae bench "${BENCH_B[@]}" --steps 20 --warmup 3 --data "$JPEGS" --augment-on device \
        --num-workers 16 "${TOY_PIPELINE[@]}" --json "$WORK/pipeline_device.json"

    # 5. The CUDA-only tests (predicted 110 s, in cuda_tests above).
    cuda_tests

    # 6. The memory plan against the memory a few eager training steps allocate (`vitmae plan --measure-steps`:
    #    torch.cuda.max_memory_allocated and the bytes the forward leaves allocated, next to the plan's total
    #    and activations, in the piece's result). ViT-B/16 at batch 256 without activation checkpointing,
    #    ViT-L/16 at batch 128 with it; bf16, one GPU. Predicted 15 s and 20 s: start 8 s; the plan's
    #    trace on fake tensors 1-2 s; the model initialised on the CPU and moved 2 s (ViT-L 4 s); 3 eager steps,
    #    the first loading the kernels, 3 s. Last of the mandatory pieces: if time runs short, they give way.
    piece plan_vit_b16 15 60 "$WORK/plan_vit_b16.json" - \
        "$PY" -m vitmae plan --model mae_vit_base_patch16 --batch-size 256 --precision bf16 --device cuda \
        --measure-steps 3 "${TOY_PLAN[@]}" --json "$WORK/plan_vit_b16.json"
    piece plan_vit_l16 20 60 "$WORK/plan_vit_l16.json" - \
        "$PY" -m vitmae plan --model mae_vit_large_patch16 --batch-size 128 --precision bf16 --grad-checkpointing \
        --device cuda --measure-steps 3 "${TOY_PLAN[@]}" --json "$WORK/plan_vit_l16.json"

    # Mandatory pieces predicted: 5 + 10 + 140 + 100 + 10 + 60 + 110 + 15 + 20 = 470 s = 7.8 minutes (budget
    # 525 s).
    # Then, only with time left over:

    # 7. ViT-L/16 pre-training under --strategy fsdp on the one GPU (a process group of one): FSDP2's
    #    wrapping, bf16 MixedPrecisionPolicy and sharded DCP checkpoints on CUDA, end to end; its img/s
    #    against piece 3's unsharded step. Eager (no compile), batch 128, 30 steps on the JPEG folder.
    #    Predicted 45 s: start 8 s, build 8 s, 16 workers 3 s, 30 steps x ~0.12 s 4 s, held-out loss and
    #    grids on a gathered copy 5 s, two sharded checkpoints of 330 M parameters + AdamW 10 s. Needs 50 s
    #    (first of the optional pieces: the scaling numbers are the ones still missing).
    if ((DEADLINE - SECONDS >= 50)); then
        piece fsdp_vit_l16 45 90 "$WORK/fsdp_vit_l16/metrics.json" - \
            "$PY" -m vitmae pretrain --model mae_vit_large_patch16 --strategy fsdp --precision bf16 --device cuda \
            --no-compile --data "$JPEGS" --batch-size 128 --max-steps 30 --save-every-steps 15 --num-workers 16 \
            --heldout-samples 64 --viz-every-epochs 0 --log-every-steps 10 "${TOY_FSDP[@]}" \
            --output "$WORK/fsdp_vit_l16" --overwrite
    else
        skip fsdp_vit_l16 45 "under 50 s left"
    fi

    # 8. The input pipeline with PIL in 16 DataLoader workers. Predicted 45 s: start 8 s, step from the
    #    cache 15 s twice, 2 x 5,376 images at ~2,200 img/s (REFERENCE.md: 2,181) 5 s. Needs 60 s left.
    if ((DEADLINE - SECONDS >= 60)); then
        piece pipeline_workers 45 90 "$WORK/pipeline_workers.json" - \
            "$PY" -m vitmae bench "${BENCH_B[@]}" --steps 20 --warmup 3 --data "$JPEGS" --augment-on workers \
            --num-workers 16 "${TOY_PIPELINE[@]}" --json "$WORK/pipeline_workers.json"
    else
        skip pipeline_workers 45 "under 60 s left"
    fi

    # 9. ViT-B/16 with --fp8 (torchao's float8 linear layers, compiled) against transformers eager.
    #    Predicted 110 s: start 8 s, build 4 s, compiling the float8 graph ~90 s, steps 3 s. Needs 150 s
    #    left and torchao (carried in .whl/).
    if ! "$PY" -c "import torchao.float8" 2>/dev/null; then
        skip vit_b16_fp8 110 "torchao is not importable (carry its wheel in .whl/)"
    elif ((DEADLINE - SECONDS >= 150)); then
        piece vit_b16_fp8 110 160 "$WORK/vit_b16_fp8.json" - \
            "$PY" -m vitmae bench "${BENCH_B[@]}" --fp8 --compare hf --steps 15 --warmup 3 "${TOY_BENCH[@]}" \
            --json "$WORK/vit_b16_fp8.json"
    else
        skip vit_b16_fp8 110 "under 150 s left"
    fi
}

quality_after() {
    local m=$QUALITY_DIR/metrics.json
    [ -f "$m" ] || return 0
    helper quality-summary "$m" "$WORK/quality_summary.json"
    cp "$m" "$OUT/quality-metrics.json"
    cp "$QUALITY_DIR/report.md" "$OUT/quality-report.md" 2>/dev/null
    for png in accuracy_vs_labels pretraining; do
        cp "$QUALITY_DIR/$png.png" "$OUT/quality-$png.png" 2>/dev/null
    done
    return 0
}

dense_after() {
    cp "$DENSE_DIR/metrics.json" "$OUT/dense-metrics.json" 2>/dev/null
    cp "$DENSE_DIR/report.md" "$OUT/dense-report.md" 2>/dev/null
    return 0
}

quality() {
    # The Fashion-MNIST IDX files: carried as .gpu/fashion-mnist where the Debian package is missing.
    if [ ! -f "$FMNIST/train-images-idx3-ubyte.gz" ] && [ -d .gpu/fashion-mnist ]; then
        mkdir -p "$FMNIST" && cp .gpu/fashion-mnist/*.gz "$FMNIST"/
    fi
    TIMEOUT_FOREGROUND=1  # SIGTERM to the trainer itself: it saves a checkpoint at the step's end
    # A pre-training cut off by the previous call (checkpoint, no metrics.json) continues where it
    # stopped; finished sub-runs (their metrics.json) are reused by the experiment itself.
    if [ -f "$QUALITY_DIR/pretrain/checkpoints/latest" ] && [ ! -f "$QUALITY_DIR/pretrain/metrics.json" ]; then
        piece pretrain_resume 120 "$BUDGET" - - "$PY" -m vitmae pretrain --resume "$QUALITY_DIR/pretrain"
    fi
    # The `gpu` scale (experiments/label_efficiency.py): ViT-Tiny, patch 4, 60 pre-training epochs,
    # fine-tuning 100 / 30 / 10 epochs. Predicted 415 s on an H200 with 12 workers (docs/results.md has the
    # reckoning): start 15 s; pre-training 180 s (compile 45 s, 60 epochs x ~2 s: 117 steps of 512, launch-
    # and loader-bound at ~30,000 img/s, far below the FLOP bound, plus kNN and held-out checks 25 s);
    # frozen features of three encoders 20 s; nine kNN 15 s; nine linear probes (24,000 LARS steps) 60 s;
    # six eager fine-tuning runs 125 s. What is left when the budget ends continues in the next call.
    piece label_efficiency 415 "$BUDGET" "$WORK/quality_summary.json" quality_after \
        $LABEL_EFFICIENCY --scale "$QUALITY_SCALE" --num-workers 12 --output "$QUALITY_DIR" "${TOY_QUALITY[@]}"
    # Dense transfer (experiments/dense_transfer.py, `gpu` scale): MAE against scratch for segmentation and
    # detection on fashion-scenes at 100 and 1,000 labeled scenes, each cell with seeds 0, 1 and 2. Predicted
    # 2560 s, so it runs in the time the label-efficiency piece leaves and continues over the next calls
    # (finished runs are reused, a cut-off pre-training resumes): 50,000 scenes written 60 s; ViT-Tiny
    # pre-training, 100 epochs of 96-px scenes (144 tokens), 5M images at ~15,000 img/s 340 s; per label
    # budget and seed four segmentation runs of 2,000 steps ~40 s each and two Mask R-CNN runs ~100 s each,
    # 360 s (2,160 s for the six).
    piece dense_transfer 2560 "$BUDGET" - dense_after \
        $DENSE_TRANSFER --scale gpu --num-workers 12 --output "$DENSE_DIR" "${TOY_DENSE[@]}"
}

# The video MAE (ViT-B/16, 16 frames of 224 px, tubelet 2, tube masking at 0.9: 1,568 tokens, 160 visible),
# batch 32, bf16: vitmae compiled against transformers' VideoMAEForPreTraining eager and compiled, with
# VideoMAE's target on both (tasks/bench.py). Predicted 200 s: start 8 s; two models built 5 s; vitmae's
# compile ~50 s (the image ViT-B's graph on 160 + 1,568 tokens), transformers' ~70 s; 10 rounds x (~0.11 +
# ~0.2 + ~0.15 s: the encoder on 160 tokens is a fifth of an image step's work, the decoder on 1,568 tokens
# about two image steps') 5 s; warm-up and peak memory 5 s; slack. The issue's target: 2x transformers eager.
video() {
    piece video_vit_b16 200 300 "$WORK/video_vit_b16.json" - \
        "$PY" -m vitmae bench --device cuda --model videomae_vit_base_patch16 --batch-size 32 --precision bf16 \
        "${PEAK[@]}" --compare hf,hf-compiled --steps 10 --warmup 3 "${TOY_VIDEO[@]}" --json "$WORK/video_vit_b16.json"
}

for STAGE in "$@"; do
    case "$STAGE" in
    standing | quality | tests | video) ;;
    *)
        echo "unknown stage $STAGE; choose from: standing, quality, tests, video" >&2
        exit 2
        ;;
    esac
    LOG=$OUT/$STAGE.log
    STAGE_JSON=$OUT/$STAGE.json
    : >"$LOG"
    helper init "$STAGE_JSON" --stage "$STAGE" --dry-run "$DRY" --budget "$BUDGET" --gpu "$GPU_NAME"
    PIECE_STATUS= TIMEOUT_FOREGROUND=0
    DEADLINE=$((SECONDS + BUDGET))
    echo "stage $STAGE$([ "$DRY" = 1 ] && echo " (dry run, CPU, toy sizes)"): budget $BUDGET s, results in $OUT" \
        | tee -a "$LOG"
    if compgen -G ".whl/*.whl" >/dev/null; then
        export PYTHONPATH=$ROOT/src:$SITE
        [ "$STAGE" = standing ] || "${WHEELS[@]}" .whl/*.whl >>"$LOG" 2>&1
    fi
    case "$STAGE" in
    standing) standing ;;
    quality) quality ;;
    tests) cuda_tests ;;
    video) video ;;
    esac
    helper summary "$STAGE_JSON" | tee -a "$LOG"
done

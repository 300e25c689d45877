#!/usr/bin/env bash
# Builds what scripts/gpu_session.sh needs next to the checkout on a lent GPU machine (which has no
# internet), in two git-ignored folders that the GPU tool carries (`carry: [".whl", ".gpu"]`):
#
#   .whl/               torchao for the GPU image's Python 3.12 (x86-64), installed there into /tmp/site
#   .gpu/fashion-mnist/ the four Fashion-MNIST IDX files (from the dataset-fashion-mnist Debian package)
#
# Everything that travels (the checkout's files and these folders) must stay under 64 MiB: checked here.
#   bash scripts/gpu_carry.sh          (make gpu-carry)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2
PY=${PY:-python3}
TORCHAO=${TORCHAO:-torchao==0.18.0}  # 0.18 is the first torchao built for torch 2.11, the GPU image's torch
FMNIST=${FMNIST:-/usr/share/datasets/fashion-mnist}
LIMIT_MIB=64
status=0

mkdir -p .whl
rm -f .whl/torchao-*.whl
if "$PY" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "$TORCHAO"; then
    echo "  .whl: $(ls .whl)"
else
    echo "gpu-carry: could not download $TORCHAO (offline?): the GPU session will skip its fp8 piece and test" >&2
fi

mkdir -p .gpu/fashion-mnist
files=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)
missing=0
for f in "${files[@]}"; do
    if [ -f "$FMNIST/$f" ]; then cp "$FMNIST/$f" .gpu/fashion-mnist/; else missing=1; fi
done
if [ "$missing" = 1 ]; then
    echo "gpu-carry: Fashion-MNIST IDX files missing in $FMNIST (apt-get install dataset-fashion-mnist):" \
        "the quality stage needs them" >&2
    status=1
else
    echo "  .gpu/fashion-mnist: ${files[*]}"
fi

# What travels: tracked and untracked-not-ignored files, plus the carried folders.
tree=$(git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null | awk '{s += $1} END {print s + 0}')
carried=$(du -sb .whl .gpu | awk '{s += $1} END {print s + 0}')
total=$((tree + carried))
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
echo "gpu-carry: checkout $(mib "$tree") + .whl and .gpu $(mib "$carried") = $(mib "$total") (limit $LIMIT_MIB MiB)"
if ((total >= LIMIT_MIB * 1048576)); then
    echo "gpu-carry: over the $LIMIT_MIB MiB that the GPU tool carries" >&2
    status=1
fi
exit $status

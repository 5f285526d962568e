#!/usr/bin/env bash
# The GPU benchmarks in one run (model, CAM, preprocessing + whole analysis), for a CUDA machine
# with PyTorch installed. Results land in $OUT (or benchmarks/results/).
set -u
OUT="${OUT:-benchmarks/results}"; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="${PYTHONPATH:-}:$PWD"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
run() { echo "=== $*"; timeout "${STEP_TIMEOUT:-240}" "$@" 2>&1 | tee -a "$OUT/gpu_suite.log"; }
if [ -n "${CHECK_CKPT:-}" ]; then
    run python3 benchmarks/gpu_check.py --ckpt "$CHECK_CKPT" --images "$CHECK_IMAGES" ${CHECK_EXPECTED:+--expected "$CHECK_EXPECTED"}
fi
run python3 benchmarks/model_bench.py --device cuda --size L14 --batch 128
run python3 benchmarks/cam_bench.py --device cuda --size L14 --batch 128
run python3 benchmarks/preprocess_bench.py --device cuda --n "${N_IMAGES:-1024}" --batch-size 128 \
    --threads "$(nproc)" --model vit-l --out "$OUT"
cp benchmarks/results/*.json "$OUT"/ 2>/dev/null || true

#!/usr/bin/env bash
# Wheels for the GPU benchmarks on a machine whose Python (3.12) has PyTorch but not the rest:
# downloads them into .whl/ here; on the GPU machine install them with
#   python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl
#   export PYTHONPATH=/tmp/site
# Usage: bash benchmarks/gpu_wheels.sh [python-version, default 3.12]; then, with .whl carried
# to the GPU machine: bash benchmarks/gpu_suite.sh (the fixture is tests/fixtures/, tracked).
set -euo pipefail
PY="${1:-3.12}"
DEST=.whl
mkdir -p "$DEST"
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 \
         manylinux2014_x86_64 manylinux1_x86_64; do platforms+=(--platform "$p"); done
fetch() {
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PY" \
        --implementation cp "${platforms[@]}" -d "$DEST" "$@"
}
# What the benchmarks import beyond the machine's torch, torchvision, numpy, Pillow, regex,
# tqdm, safetensors and huggingface_hub (adding those here can break the installed ones).
fetch open_clip_torch==3.3.0 ftfy wcwidth ttach "sqlalchemy>=2.0,<2.2" greenlet isal
# grad-cam publishes only a source archive: build its wheel here (pure Python).
python3 -m pip wheel -q --no-deps -w "$DEST" grad-cam==1.5.7
ls -1 "$DEST"
du -sh "$DEST"

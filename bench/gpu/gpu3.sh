#!/bin/bash
# Calls 4 and 5 of 2026-11-26 (bench/results/gpu/call4-lanes.log: lanes of one thread each;
# call5-loop.log: quick requests on the event loop): the server's request lanes
# (server/lanes.py) on CUDA. Same git-ignored folders as gpu.sh: .ortgpu (onnxruntime-gpu),
# .whl (the serve wheels that machine lacks), .dev/mnist. Usage: bash bench/gpu/gpu3.sh LOGNAME
set -u
export PYTHONUNBUFFERED=1 MNIST_DIR=$PWD/.dev/mnist
t() { echo; echo "== $(date +%T) $*"; }
{
  t env; nvidia-smi --query-gpu=name --format=csv,noheader
  bash .ortgpu/unpack.sh /tmp/ortsite >/dev/null
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/ortsite:/tmp/site
  t "server tests on CUDA, and the lanes"
  timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_lanes.py \
    tests/test_server_live.py::test_cuda_answers_what_the_cpu_answers \
    tests/test_server_live.py::test_start_up_logs_providers_and_self_test 2>&1 | tail -3
  t "server speed, interleaved cpu cuda cpu cuda"
  timeout 120 python3 bench/gpu/serve_speed.py cpu cuda cpu cuda 2>&1 | grep -v "^exit"
  t done
} 2>&1 | tee "$OUT/${1:-call4-lanes}.log"

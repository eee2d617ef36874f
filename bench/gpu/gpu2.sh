#!/bin/bash
# Call 2 of 2026-11-26 (bench/results/gpu/call2-gpu2.log), same folders as gpu.sh. It stopped
# at `wait`, which also waits for the `tee` of the exec line, so the server part ran as call 3:
#   bash .ortgpu/unpack.sh /tmp/ortsite; pip install --target /tmp/site .whl/*.whl;
#   PYTHONPATH=/tmp/ortsite:/tmp/site pytest tests/test_server_live.py -k "cuda or providers";
#   PYTHONPATH=... python3 bench/gpu/serve_speed.py cpu cuda cpu cuda  (call3-speed.log)
set -u
export PYTHONUNBUFFERED=1 MNIST_DIR=$PWD/.dev/mnist
exec > >(tee -a "$OUT/gpu2.log") 2>&1
t() { echo; echo "== $(date +%T) $*"; }
t env; nvidia-smi --query-gpu=name --format=csv,noheader
bash .ortgpu/unpack.sh /tmp/ortsite >/dev/null &
t "training: CUDA smoke test"
timeout 60 python3 -m pytest -q -p no:cacheprovider -m cuda tests/test_training_cli.py 2>&1 | tail -2
t "short CUDA run, then export: do training's float32 scores equal the ONNX ones?"
timeout 60 python3 -m training --device cuda --subset 20000 --epochs 3 --out /tmp/r 2>&1 | grep -E "test|vote|done"
timeout 50 python3 -m export --run /tmp/r --out /tmp/b 2>&1 | grep -E "onnx|rror"
wait
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
t "server tests on CUDA"
PYTHONPATH=/tmp/ortsite:/tmp/site timeout 60 python3 -m pytest -q -p no:cacheprovider tests/test_server_live.py -k "cuda or providers" 2>&1 | tail -2
t "server speed, interleaved cpu cuda cpu cuda"
PYTHONPATH=/tmp/ortsite:/tmp/site timeout 100 python3 bench/gpu/serve_speed.py cpu cuda cpu cuda 2>&1 | grep -v "^exit"
t done

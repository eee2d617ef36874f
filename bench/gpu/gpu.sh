#!/bin/bash
# The GPU checks of 2026-11-26, as run on a lent H100 machine (call 1; output in
# bench/results/gpu/call1-gpu.log). Run from the repository root with $OUT set, and beside it,
# in git-ignored folders the machine had no other way to get: .dev/mnist (the four MNIST
# files), .dev/old/training (the training package before commit 71db8a8, the A/B baseline),
# .whl (wheels of flask, waitress, orjson, werkzeug, itsdangerous, blinker) and .ortgpu (a
# copy of onnxruntime-gpu 1.31.1 cut down to its sm_90 kernels so it fits the transfer limit;
# `pip install "onnxruntime-gpu[cuda,cudnn]==1.31.1"` is the real install). Run as
# `BUDGET=535 bash bench/gpu/gpu.sh`.
set -u
export PYTHONUNBUFFERED=1 MNIST_DIR=$PWD/.dev/mnist
exec > >(tee -a "$OUT/gpu.log") 2>&1
START=$(date +%s)
left() { echo $(( ${BUDGET:-560} - ($(date +%s) - START) - $1 )); }  # seconds left, less a reserve
t() { echo; echo "== $(date +%T) $*"; }
t env
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch,sys;print(sys.version.split()[0], torch.__version__, torch.cuda.get_device_name())"
nproc
SP=$(python3 -c "import sysconfig;print(sysconfig.get_paths()['purelib'])")
ls "$SP/nvidia" | tr '\n' ' '; echo

t "onnxruntime-gpu (compact copy) + serve wheels"
bash .ortgpu/unpack.sh /tmp/ortsite && ln -sfn "$SP/nvidia" /tmp/ortsite/nvidia
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
t "ort check: users' path (preload_dlls, no LD_LIBRARY_PATH)"
PYTHONPATH=/tmp/ortsite:/tmp/site timeout 120 python3 bench/gpu/ort_check.py 2>&1 | grep -v "^\s*$"
t "server tests on CUDA"
PYTHONPATH=/tmp/ortsite:/tmp/site timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_server_live.py -k "cuda or providers or mnist_test_digits" 2>&1 | tail -15
t "server speed cpu vs cuda"
PYTHONPATH=/tmp/ortsite:/tmp/site timeout 90 python3 bench/gpu/serve_speed.py 2>&1 | tail -12

t "training: CUDA smoke test"
timeout 90 python3 -m pytest -q -p no:cacheprovider -m cuda tests/test_training_cli.py 2>&1 | tail -4
t "training A/B, same machine: previous code (AveragedModel, foreach optimisers), sequential"
(cd .dev/old && timeout 120 python3 -m training --device cuda --subset 20000 --epochs 2 --out /tmp/ab-old 2>&1 | grep -E "epoch   2/2|done in|rror")
t "training A/B: this code, one recipe at a time"
timeout 100 python3 -m training --device cuda --subset 20000 --epochs 2 --jobs 1 --out /tmp/ab-seq 2>&1 | grep -E "epoch   2/2|done in|rror"
t "training A/B: this code, three at once"
timeout 100 python3 -m training --device cuda --subset 20000 --epochs 2 --out /tmp/ab-par 2>&1 | grep -E "device|epoch   2/2|done in|rror"

t "bench: training images/s (CPU of this box, CUDA)"
timeout 60 python3 -c "from bench.__main__ import training_speed; import json; print(json.dumps(training_speed(4.0), indent=1))"

t "full default training run on CUDA"
S=$(date +%s)
echo "timeout $(left 75) s"
timeout $(left 75) python3 -m training --device cuda --out /tmp/cudarun > "$OUT/train.log" 2>&1; echo "rc $? wall $(( $(date +%s) - S )) s"
grep -E "epoch +(1|30|60)/60|test|vote|done in" "$OUT/train.log" | tail -20
cp /tmp/cudarun/metrics.json /tmp/cudarun/curves.png "$OUT/" 2>/dev/null
tar czf "$OUT/cudarun.tgz" --exclude=last.pt -C /tmp cudarun 2>/dev/null

t "export the CUDA-trained run (ONNX parity with PyTorch)"
timeout $(left 3) python3 -m export --run /tmp/cudarun --out /tmp/cudabundle 2>&1 | tail -12
t done

#!/usr/bin/env bash
# Installs everything the test suite needs (idempotent) and runs it: lint, format check,
# security lint of the server and pytest. Usage: scripts/test.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
export MNIST_DIR=${MNIST_DIR:-$(cd .. && pwd)/shared/data/mnist}

# Chromium for the browser tests, from Debian's archive, when it is not there yet.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi

. scripts/venv.sh
ensure_venv $VENV requirements-dev.txt requirements-train.txt requirements-serve.txt
# tritonserver's side of tests/test_triton.py lives apart: it needs numpy<2.
ensure_venv .venv-triton requirements-triton.txt
export TRITON_VENV=${TRITON_VENV:-$PWD/.venv-triton}

$VENV/bin/ruff check .
$VENV/bin/ruff format --check .
$VENV/bin/bandit -q -c pyproject.toml -r server
$VENV/bin/python -m pytest "$@"

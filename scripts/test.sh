#!/usr/bin/env bash
# Installs everything the test suite needs (idempotent) and runs it: lint, format check,
# security lint of the server and pytest. Usage: scripts/test.sh [extra pytest args]
# After this set-up the tests themselves need no network.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
export MNIST_DIR=${MNIST_DIR:-$(cd .. && pwd)/shared/data/mnist}

# The Python that builds the virtualenvs: 3.11 or newer, with its venv module (Debian and
# Ubuntu ship that separately, as python3-venv).
PYTHON=${PYTHON:-python3}
if ! command -v "$PYTHON" >/dev/null; then
  echo "scripts/test.sh: no $PYTHON on PATH: install Python 3.11 or newer, or set PYTHON=/path/to/python3" >&2
  exit 1
fi
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "scripts/test.sh: $PYTHON is Python $("$PYTHON" -c 'import platform; print(platform.python_version())'); the project needs 3.11 or newer: install it and set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
  echo "scripts/test.sh: $PYTHON cannot make virtualenvs (no venv/ensurepip module): apt-get install python3-venv (or python3.X-venv for your version)" >&2
  exit 1
fi
export PYTHON

# Chromium for the browser tests, from Debian's archive, when it is not there yet.
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
fi

# Fonts and Fashion-MNIST for the non-digits that training generates (training/nondigits.py)
# and the benchmark draws, from Debian's archive when missing: never downloaded at run time.
DEBS="dataset-fashion-mnist fonts-dejavu-core fonts-dejavu-extra fonts-liberation
  fonts-liberation2 fonts-freefont-ttf fonts-urw-base35 fonts-crosextra-carlito
  fonts-crosextra-caladea fonts-cantarell fonts-comic-neue fonts-roboto-unhinted fonts-noto-mono
  fonts-open-sans fonts-linuxlibertine"
MISSING=$(for d in $DEBS; do dpkg-query -W -f='${Status}' "$d" 2>/dev/null | grep -q "ok installed" || echo "$d"; done)
if [ -n "$MISSING" ]; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -qq
  # shellcheck disable=SC2086 # one word per package
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $MISSING >/dev/null
fi

# Podman, runc and debootstrap for tests/test_container.py, which builds deploy/Dockerfile on
# a Debian base it makes with debootstrap, and runs it.
if ! command -v podman >/dev/null || ! command -v runc >/dev/null ||
  ! command -v debootstrap >/dev/null; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq podman runc debootstrap >/dev/null
fi

# The three virtualenvs are built side by side: pip spends much of its time waiting on
# downloads and the disk.
. scripts/venv.sh
ensure_venv $VENV requirements-dev.txt requirements-train.txt requirements-serve.txt &
main=$!
# tritonserver's side of tests/test_triton.py lives apart: it needs numpy<2.
ensure_venv .venv-triton requirements-triton.txt &
triton=$!
# requirements-serve.txt alone, as scripts/serve.sh and the container install it: the
# serve-install test runs the server from it.
ensure_venv .venv-serve requirements-serve.txt &
serve=$!
for job in $main $triton $serve; do
  wait "$job" || { echo "scripts/test.sh: a virtualenv could not be built (pip's error above)" >&2; exit 1; }
done
export TRITON_VENV=${TRITON_VENV:-$PWD/.venv-triton}
export SERVE_VENV=${SERVE_VENV:-$PWD/.venv-serve}

$VENV/bin/ruff check .
$VENV/bin/ruff format --check .
$VENV/bin/bandit -q -c pyproject.toml -r server
# Two workers, each taking whole test modules (tests/conftest.py starts the longest first):
# much of the suite waits on servers, browsers and subprocesses. -n 0 runs it in one process.
$VENV/bin/python -m pytest -n 2 --dist loadfile --durations=20 "$@"

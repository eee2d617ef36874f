#!/usr/bin/env bash
# Starts the server on the shipped models in artifacts/, from a virtualenv that holds
# requirements-serve.txt and nothing else (no torch). Arguments go to `python -m server`.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv-serve
. scripts/venv.sh
ensure_venv $VENV requirements-serve.txt
exec $VENV/bin/python -m server "$@"

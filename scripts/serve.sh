#!/usr/bin/env bash
# Starts the server on the shipped models in artifacts/, from a virtualenv that holds
# requirements-serve.txt and nothing else (no torch). Arguments go to `python -m server`.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv-serve
export PIP_DISABLE_PIP_VERSION_CHECK=1

stamp=$VENV/.requirements.sha256
want=$(sha256sum requirements-serve.txt | cut -d' ' -f1)
if [ ! -x $VENV/bin/python ] || [ "$(cat $stamp 2>/dev/null)" != "$want" ]; then
  [ -x $VENV/bin/python ] || "$PYTHON" -m venv $VENV
  $VENV/bin/pip install -q -r requirements-serve.txt
  echo "$want" >$stamp
fi
exec $VENV/bin/python -m server "$@"

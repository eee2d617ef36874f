# Sourced by serve.sh and test.sh. ensure_venv VENV REQUIREMENTS [FILES IT INCLUDES...]:
# makes VENV from REQUIREMENTS, and reinstalls only when one of those files changed.
ensure_venv() {
  local venv=$1 stamp=$1/.requirements.sha256 want
  want=$(cat "${@:2}" | sha256sum | cut -d' ' -f1)
  if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    [ -x "$venv/bin/python" ] || "${PYTHON:-python3}" -m venv "$venv"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/pip" install -q --upgrade pip
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/pip" install -q -r "$2"
    echo "$want" >"$stamp"
  fi
}

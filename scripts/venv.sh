# Sourced by serve.sh and test.sh. ensure_venv VENV REQUIREMENTS [FILES IT INCLUDES...]:
# makes VENV from REQUIREMENTS, and reinstalls only when one of those files changed.
#
# A checkout without VENV gets a link to a virtualenv kept in $VENV_CACHE (default
# ~/.cache/digits-venvs) under the sha256 of those files: every clone on the machine with the
# same requirements shares one build, and a fresh clone skips the minutes pip takes. A cached
# virtualenv is never changed once built (other requirements make another one); delete the
# folder to reclaim its space. A VENV that is a folder of its own is updated in place.
VENV_CACHE=${VENV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/digits-venvs}

ensure_venv() {
  local venv=$1 want built
  want=$(cat "${@:2}" | sha256sum | cut -d' ' -f1)
  # Through every link: a checkout's link to another checkout's cached one is a cached one.
  if [ -e "$venv" ] && [ "$(dirname "$(readlink -f "$venv")")" != "$(readlink -f "$VENV_CACHE")" ]; then
    _install_venv "$venv" "$2" "$want"
    return
  fi
  built=$VENV_CACHE/$(basename "$venv")-${want:0:16}
  mkdir -p "$VENV_CACHE"
  # One build at a time per virtualenv: another clone's test run may be making the same one.
  (
    flock 9
    _install_venv "$built" "$2" "$want"
  ) 9>"$built.lock"
  ln -sfn "$built" "$venv"
}

# _install_venv VENV REQUIREMENTS SHA256: (re)installs unless VENV's stamp says SHA256. The
# stamp is written last, so an interrupted install is done again.
_install_venv() {
  local venv=$1 stamp=$1/.requirements.sha256
  if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$3" ]; then
    [ -x "$venv/bin/python" ] || "${PYTHON:-python3}" -m venv "$venv"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$venv/bin/pip" install -q -r "$2"
    echo "$3" >"$stamp"
  fi
}

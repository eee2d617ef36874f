#!/usr/bin/env bash
# Makes a Debian bookworm base image with python3 from Debian's archive, for podman builds on
# machines that reach an apt mirror but no image registry: the image is kept in podman's store
# and made again only when missing or when the package list below changes. Needs root and
# debootstrap; takes about a minute.
#   deploy/base.sh [IMAGE]            (default localhost/debian-python3:bookworm)
# MIRROR: the archive to fetch from (default: the one apt on this machine uses for bookworm).
set -euo pipefail

image=${1:-localhost/debian-python3:bookworm}
# python3-venv: the Dockerfile's first stage makes a virtualenv with pip in it.
packages=python3,python3-venv,ca-certificates
podman=(podman --runtime "${PODMAN_RUNTIME:-runc}")

have=$("${podman[@]}" image inspect --format '{{index .Labels "debootstrap.packages"}}' \
  "$image" 2>/dev/null || true)
[ "$have" = "$packages" ] && exit 0

# The first bookworm archive in apt's sources: one-line (sources.list) or deb822 (.sources).
apt_mirror() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk '$1 == "deb" { sub(/\[[^]]*\][ \t]*/, ""); if ($3 == "bookworm") { print $2; exit } }' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk 'BEGIN { RS = "" }
      /(^|\n)Suites:[^\n]*[ \t]bookworm([ \t\n]|$)/ && match($0, /URIs:[ \t]*[^ \t\n]+/) {
        uri = substr($0, RSTART, RLENGTH); sub(/URIs:[ \t]*/, "", uri); print uri; exit }' "$f"
  done
}
mirror=${MIRROR:-$(apt_mirror | head -n 1)}
mirror=${mirror:-http://deb.debian.org/debian}

root=$(mktemp -d "${TMPDIR:-/var/tmp}/debian-python3.XXXXXX")
# --one-file-system: never follow a mount that a failed debootstrap left inside the tree.
trap 'rm -rf --one-file-system "$root"' EXIT
echo "base.sh: debootstrap bookworm from $mirror into $image" >&2
debootstrap --variant=minbase --include="$packages" bookworm "$root" "$mirror" >&2
# As in Debian's own images: no downloaded packages, no package lists.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | "${podman[@]}" import \
  --change 'CMD ["/bin/bash"]' \
  --change "LABEL debootstrap.packages=$packages" \
  --change "LABEL debootstrap.mirror=$mirror" \
  - "$image" >/dev/null

#!/usr/bin/env bash
# Builds deploy/Dockerfile with podman on a local Debian bookworm base (deploy/base.sh), for
# machines that reach Debian's archive and PyPI but no image registry. Podman's layer cache
# makes a rebuild without changes take seconds.
#   deploy/build.sh [TAG [PODMAN BUILD OPTIONS...]]   (TAG: localhost/digits-server:latest)
# BASE_IMAGE: build on this image instead (e.g. python:3.11-slim where a registry is reachable).
# CA_BUNDLE: the CA certificates pip inside the build must trust (default: this machine's, so a
# TLS-inspecting proxy that the host trusts is trusted in the build too).
set -euo pipefail
cd "$(dirname "$0")/.."

tag=${1:-localhost/digits-server:latest}
shift $(($# > 0))
base=${BASE_IMAGE:-localhost/debian-python3:bookworm}
# runc: crun fails in some sandboxes. The limits: a container may not raise its own above the
# host's, and where that is not allowed podman's defaults fail.
podman=(podman --runtime "${PODMAN_RUNTIME:-runc}")
limits=(--ulimit nofile=1024:1024 --ulimit nproc=1000:1000)

[ -n "${BASE_IMAGE:-}" ] || deploy/base.sh "$base"

args=(--build-arg "BASE=$base")
bundle=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}
if [ -f "$bundle" ]; then
  # Mounted for the build only (never part of a layer), and named to pip, which otherwise
  # trusts the certificates it ships with.
  args+=(-v "$bundle:$bundle:ro" --build-arg "PIP_CERT=$bundle")
fi
# The index pip uses on this machine, if it is not PyPI (file:// indexes cannot be reached
# from the build).
index=${PIP_INDEX_URL:-$(pip config get global.index-url 2>/dev/null || true)}
case $index in http://* | https://*) args+=(--build-arg "PIP_INDEX_URL=$index") ;; esac

# --format docker: the OCI image format has no HEALTHCHECK.
"${podman[@]}" build "${limits[@]}" --format docker "${args[@]}" "$@" -f deploy/Dockerfile -t "$tag" .

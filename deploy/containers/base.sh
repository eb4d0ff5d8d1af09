#!/usr/bin/env bash
# The images' base, built here from Debian bookworm with debootstrap (no Docker Hub): a minimal
# root file system with python3 3.11, venv and CA certificates, imported as one layer.
# Skipped when the image exists; FORCE=1 rebuilds it. Needs root (debootstrap, podman import).
#
#   deploy/containers/base.sh            # -> localhost/imgclf-base:bookworm
set -euo pipefail

IMAGE=${BASE_IMAGE:-localhost/imgclf-base:bookworm}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}

if [ "${FORCE:-0}" != 1 ] && podman image exists "$IMAGE"; then
    echo "base: $IMAGE exists (FORCE=1 rebuilds it)"
    exit 0
fi
root=$(mktemp -d /var/tmp/imgclf-base.XXXXXX)
trap 'rm -rf "$root"' EXIT

debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$root" "$MIRROR"
# What only apt, man and translators read: ~40 MB an image would carry for nothing.
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/log/* \
    "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/locale/* \
    "$root"/usr/share/info/*
tar --numeric-owner -C "$root" -c . |
    podman import --change 'CMD ["/bin/bash"]' --change 'ENV LANG=C.UTF-8' - "$IMAGE"
echo "base: built $IMAGE"

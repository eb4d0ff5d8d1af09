#!/usr/bin/env bash
# `make images`: the base (base.sh, once), then the training and `imgclf serve` images from the
# repository's Dockerfile with podman. Layers are cached: after a source change only the package
# layer is rebuilt; after a setup.py change the dependencies are installed again. Needs root and podman, buildah, debootstrap and runc (Debian packages).
#
#   deploy/containers/build.sh               # localhost/imgclf:latest, localhost/imgclf-serve:latest
#   VARIANT=gpu deploy/containers/build.sh   # the same, tagged :gpu, with TensorFlow's CUDA wheels
set -euo pipefail
cd "$(dirname "$0")/../.."

export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/deploy/containers/containers.conf}
VARIANT=${VARIANT:-cpu}
if [ "$VARIANT" = cpu ]; then TAG=${TAG:-latest}; else TAG=${TAG:-$VARIANT}; fi
HOST_CA=/etc/ssl/certs/ca-certificates.crt

deploy/containers/base.sh

# chroot isolation: the build's RUN steps need no runtime of their own (none works nested).
options=(--isolation chroot --layers --build-arg "VARIANT=$VARIANT")
if [ -f "$HOST_CA" ]; then
    # Over the image's own bundle, for the build's RUN steps only: no file of it stays behind.
    options+=(--volume "$HOST_CA:$HOST_CA:ro" --build-arg "PIP_CERT=$HOST_CA")
fi
for target in training serve; do
    if [ "$target" = serve ]; then image=localhost/imgclf-serve:$TAG; else image=localhost/imgclf:$TAG; fi
    start=$SECONDS
    podman build "${options[@]}" --target "$target" --tag "$image" .
    echo "images: $image built in $((SECONDS - start)) s ($(podman image inspect --format '{{.Size}}' "$image") bytes)"
done

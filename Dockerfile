# syntax=docker/dockerfile:1
# The images: `training` (the `imgclf` command: ingest, train, export, registry, ..., and
# TensorBoard) and `serve` (`imgclf serve` over a mounted model registry). Both are one install
# of the package on a Python 3.11 base; `make images` builds them with podman:
#
#   make images                                      # localhost/imgclf, localhost/imgclf-serve
#   podman build --target training -t imgclf .       # by hand, after deploy/containers/base.sh
#   podman build --target serve -t imgclf-serve .
#   podman run --rm -v "$PWD/data:/work/data" -v "$PWD/runs:/work/runs" imgclf train --config /app/configs/digits.yaml
#
# The base is built here from Debian bookworm (deploy/containers/base.sh, no Docker Hub);
# where Docker Hub is reachable --build-arg BASE_IMAGE=python:3.11-slim works the same.
# The images run as uid 1000: mounts must be readable (the registry) or writable (runs, data).
#
# GPU (--build-arg VARIANT=gpu): TensorFlow's own CUDA and cuDNN wheels (`tensorflow[and-cuda]`)
# on the same base rather than an nvidia/cuda image: TF pins the CUDA/cuDNN versions it was built
# against, the pip wheels are exactly those, and the CUDA images ship another Python than the
# 3.11 the package requires. The host needs only the NVIDIA driver and the container toolkit
# (`--gpus all`, or a Kubernetes node with the NVIDIA device plugin).

ARG VARIANT=cpu
ARG BASE_IMAGE=localhost/imgclf-base:bookworm

FROM ${BASE_IMAGE} AS base-cpu
ENV TF_PACKAGE="tensorflow==2.21.*"

FROM ${BASE_IMAGE} AS base-gpu
ENV TF_PACKAGE="tensorflow[and-cuda]==2.21.*" \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

# The tag is one of the two stages above, chosen by VARIANT; hadolint cannot resolve it.
# hadolint ignore=DL3006
FROM base-${VARIANT} AS install
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/imgclf \
    PATH=/opt/imgclf/bin:$PATH
# A CA bundle for pip where TLS to the index is intercepted: make images mounts the host's over
# the image's own for the build only (the image keeps Debian's), and points PIP_CERT at it.
ARG PIP_CERT
RUN python3 -m venv /opt/imgclf

WORKDIR /app
# The dependencies alone first: setup.py with no package beside it installs only them, so this
# ~2.7 GB layer is rebuilt when setup.py changes, not when the sources do.
COPY setup.py ./
# TensorFlow's C++ headers (430 MB) serve only to compile custom ops, which nothing here does.
RUN pip install "$TF_PACKAGE" . \
    && pip uninstall --yes imgclf \
    && rm -rf build imgclf.egg-info "$VIRTUAL_ENV"/lib/python3*/site-packages/tensorflow/include
# Only what setup.py packages (and .dockerignore lets through).
COPY core ./core
COPY artifacts ./artifacts
COPY configs ./configs
COPY transforms ./transforms
COPY trainer ./trainer
COPY evaluator ./evaluator
COPY tracking ./tracking
COPY serving ./serving
COPY registry ./registry
COPY monitoring ./monitoring
COPY tfx_pipeline ./tfx_pipeline
COPY cli ./cli
RUN pip install --no-deps . \
    && rm -rf build imgclf.egg-info \
    && useradd --create-home --uid 1000 imgclf \
    && mkdir -p /work /runs /data /models \
    && chown imgclf:imgclf /work /runs /data

# Runs, data and the registry are volumes; relative paths in configs resolve under /work.
WORKDIR /work
USER 1000:1000

# `imgclf serve` over the registry mounted at /models: serving.config is
# `imgclf registry serving-config --root /models`'s output, re-read every serving.poll_seconds,
# so a promote or rollback on the host is served without a restart. Run it with --init (or a
# Kubernetes pod, whose runtime does the same): the server stops cleanly on SIGTERM.
FROM install AS serve
EXPOSE 8500 8501
# The registry is part of the entrypoint, so flags after the image name (--log-level warning,
# --set serving.auth.token_file=...) add to it instead of replacing it; a later
# --model-config-file overrides it.
ENTRYPOINT ["imgclf", "serve", "--host", "0.0.0.0", "--model-config-file", "/models/serving.config"]
CMD []

# The default target: the last stage.
FROM install AS training
EXPOSE 6006
ENTRYPOINT ["imgclf"]
CMD ["--help"]

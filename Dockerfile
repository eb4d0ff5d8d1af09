# syntax=docker/dockerfile:1
# The training/pipeline image: the `imgclf` command (ingest, train, export, registry, ...) and
# TensorBoard, installed with `pip install .`. Build from the repository root:
#
#   docker build -t imgclf .                            # CPU (default)
#   docker build -t imgclf:gpu --build-arg VARIANT=gpu .  # NVIDIA GPUs
#   docker run --rm -v "$PWD/data:/work/data" -v "$PWD/runs:/work/runs" imgclf train --config /app/configs/digits.yaml
#
# Add --gpus all to run imgclf:gpu. The image runs as uid 1000: mounts must be writable by it.
#
# GPU: TensorFlow's own CUDA and cuDNN wheels (`tensorflow[and-cuda]`) on the same Python 3.11
# base rather than an nvidia/cuda image: TF pins the CUDA/cuDNN versions it was built against,
# the pip wheels are exactly those, and the CUDA images ship another Python than the 3.11 the
# package requires. The host needs only the NVIDIA driver and the container toolkit
# (`docker run --gpus all`, or a Kubernetes node with the NVIDIA device plugin).

ARG VARIANT=cpu
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS base-cpu
ENV TF_PACKAGE="tensorflow==2.21.*"

FROM ${PYTHON_IMAGE} AS base-gpu
ENV TF_PACKAGE="tensorflow[and-cuda]==2.21.*" \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

# The tag is one of the two stages above, chosen by VARIANT; hadolint cannot resolve it.
# hadolint ignore=DL3006
FROM base-${VARIANT} AS final
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
# Only what setup.py packages: a change to tests or docs does not invalidate the install layer.
COPY setup.py ./
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
RUN pip install "$TF_PACKAGE" . \
    && useradd --create-home --uid 1000 imgclf \
    && mkdir -p /work /runs /data \
    && chown imgclf:imgclf /work /runs /data

# Runs, data and the model store are volumes; relative paths in configs resolve under /work.
WORKDIR /work
USER 1000:1000
EXPOSE 6006
ENTRYPOINT ["imgclf"]
CMD ["--help"]

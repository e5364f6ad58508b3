# syntax=docker/dockerfile:1
# synth: the command line and the Dask worker image (same code on client and workers).
#   docker build -t synth:0.1.0 .
#   docker run --rm synth:0.1.0 preview -o /tmp/p.png           # ENTRYPOINT is `synth`
#   docker run --rm --entrypoint dask synth:0.1.0 worker tcp://HOST:8786 --nthreads 1
# CUDA: a base image that has Python 3.10+ and pip, and the matching torch wheel index:
#   docker build --build-arg BASE_IMAGE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime \
#     --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu124 -t synth:0.1.0-cuda .
# Without training (smaller): --build-arg EXTRAS=cluster,s3 --build-arg TORCH_INDEX=
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG EXTRAS=train,cluster,s3

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    OMP_NUM_THREADS=1

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# torch first, from the index that matches the base (CPU wheels by default), so this large
# layer stays cached while synth's own code changes.
RUN if [ -n "${TORCH_INDEX}" ]; then \
        python -m pip install --index-url "${TORCH_INDEX}" "torch>=2.3" "torchvision>=0.18"; \
    fi

WORKDIR /opt/synth
COPY pyproject.toml README.md ./
COPY synth ./synth
# The project itself, with the lower bounds its pyproject.toml declares.
# hadolint ignore=DL3013
RUN python -m pip install ".[${EXTRAS}]" \
    && synth --version

# A numeric non-root user: Kubernetes' runAsNonRoot can only verify a numeric UID.
RUN groupadd --gid 10001 synth \
    && useradd --create-home --uid 10001 --gid 10001 --shell /usr/sbin/nologin synth
USER 10001:10001
WORKDIR /home/synth

ENTRYPOINT ["synth"]
CMD ["--help"]

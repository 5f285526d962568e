# syntax=docker/dockerfile:1
# poundcam worker image: `docker build -t poundcam-worker:0.1.0 .`
#
# The entry point is the `poundcam` CLI, so the image runs any sub-command:
#   docker run ... poundcam-worker:0.1.0 worker        (the default)
#   docker run ... poundcam-worker:0.1.0 db upgrade
# Weights are not baked in: mount them at /weights (POUNDCAM_WEIGHTS=/weights/<file>) or point
# POUNDCAM_WEIGHTS at s3://bucket/key; downloads are cached, verified by sha256, under
# POUNDCAM_CACHE_DIR (mount a volume there to keep them across restarts).

# The CUDA runtime only has to match the host driver; the torch wheel brings its own CUDA
# libraries. Override with --build-arg CUDA_IMAGE=... for older drivers.
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-runtime-ubuntu22.04
FROM ${CUDA_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Python 3.11 from the deadsnakes archive (Ubuntu 22.04 ships 3.10).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates gnupg software-properties-common \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
 && apt-get purge -y --auto-remove software-properties-common gnupg \
 && rm -rf /var/lib/apt/lists/* \
 && python3.11 -m venv /opt/venv

ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
# Dependencies first (a layer that survives source edits): install the project with empty
# packages, then replace them with the real source below.
COPY pyproject.toml README.md ./
RUN mkdir -p poundcam workers migrations \
 && touch poundcam/__init__.py workers/__init__.py migrations/__init__.py \
 && pip install --upgrade pip \
 && pip install . \
 && pip uninstall -y poundcam \
 && rm -rf build *.egg-info poundcam workers migrations

COPY poundcam ./poundcam
COPY workers ./workers
COPY migrations ./migrations
RUN pip install --no-deps . && rm -rf build *.egg-info

# A fixed numeric uid so Kubernetes can check runAsNonRoot.
RUN groupadd --gid 10001 poundcam \
 && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/poundcam --shell /usr/sbin/nologin poundcam \
 && mkdir -p /weights /var/cache/poundcam \
 && chown poundcam:poundcam /var/cache/poundcam

ENV POUNDCAM_WEIGHTS=/weights/poundnet.safetensors \
    POUNDCAM_CACHE_DIR=/var/cache/poundcam \
    POUNDCAM_METRICS_PORT=9808

USER 10001:10001
WORKDIR /home/poundcam
EXPOSE 9808

# Healthy = the worker has loaded its model and checked its stores (it writes
# /tmp/poundcam-ready then) and its consumer loop touched /tmp/poundcam-heartbeat within 300 s
# (a wedged loop stops touching it). The start period covers a first weights download.
HEALTHCHECK --interval=30s --timeout=10s --start-period=600s --retries=3 \
    CMD ["python", "-c", "import os, sys, time; os.stat('/tmp/poundcam-ready'); sys.exit(time.time() - os.stat('/tmp/poundcam-heartbeat').st_mtime > 300)"]

ENTRYPOINT ["poundcam"]
CMD ["worker"]

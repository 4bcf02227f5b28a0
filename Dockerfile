# mmhost serve in a container: the same entry point the tests run (`mmhost serve`).
#
#   CPU:   docker build -t mmhost .
#   CUDA:  docker build -t mmhost:cuda \
#            --build-arg BASE=nvidia/cuda:12.4.1-runtime-ubuntu22.04 --build-arg EXTRAS=cuda .
#
# PyPI's Linux torch wheel carries its own CUDA libraries and runs on a CPU as well; TORCH
# names another spec (or wheel) to install instead. Every MMHOST_* variable is a serve flag.
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

ARG TORCH=torch==2.13.0
ARG EXTRAS=""
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1

# a C++ compiler builds the CPU kernels at install; CUDA images bring no Python of their own
RUN set -eux; pkgs="g++"; \
    command -v python3 >/dev/null || pkgs="$pkgs python3 python3-venv python3-dev"; \
    apt-get update; apt-get install -y --no-install-recommends $pkgs; \
    rm -rf /var/lib/apt/lists/*

WORKDIR /opt/mmhost
COPY pyproject.toml setup.py README.md ./
COPY mmhost ./mmhost
RUN set -eux; python3 -m venv /opt/venv; \
    /opt/venv/bin/pip install --upgrade pip setuptools wheel; \
    /opt/venv/bin/pip install "$TORCH"; \
    /opt/venv/bin/pip install --no-build-isolation ".${EXTRAS:+[$EXTRAS]}"; \
    /opt/venv/bin/mmhost build-kernels

ENV PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    MMHOST_BIND_ADDRESS=0.0.0.0 \
    MMHOST_PORT=8080 \
    MMHOST_STORE=/models \
    MMHOST_DRAIN_SECONDS=5 \
    MMHOST_LOG_FORMAT=json
USER 65532:65532
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=2s \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/ping', timeout=2)"]
ENTRYPOINT ["mmhost", "serve"]

# Home Assistant add-on image: wyoming-gsv on CPU torch (Debian bookworm, Python 3.11, s6-overlay).
# Built by the Supervisor with BUILD_FROM from build.yaml; by hand:
#   docker build -t wyoming-gsv:cpu .
ARG BUILD_FROM=ghcr.io/home-assistant/amd64-base-debian:bookworm
FROM ${BUILD_FROM}

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG BUILD_VERSION=0.1.0
ARG BUILD_ARCH=amd64

SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# OMP_WAIT_POLICY: idle OpenMP threads sleep instead of spinning (much faster on a busy CPU).
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/usr/src/.venv/bin:${PATH} \
    OPEN_JTALK_DICT_DIR=/var/lib/mecab/dic/open-jtalk/naist-jdic \
    NLTK_DATA=/usr/share/nltk_data \
    HF_HUB_DISABLE_TELEMETRY=1 \
    OMP_WAIT_POLICY=PASSIVE

# Python, the compilers pyopenjtalk's source build needs, and the Japanese dictionary (offline use).
# torch goes in first and on its own, from the CPU-only index (a plain install pulls CUDA, ~3 GB).
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        python3 python3-venv python3-dev build-essential cmake open-jtalk-mecab-naist-jdic libgomp1 \
    && python3 -m venv /usr/src/.venv \
    && pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}" \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /usr/src/wyoming-gsv
COPY pyproject.toml README.md ./
COPY wyoming_gsv ./wyoming_gsv
RUN pip install ".[all]" \
    && python3 -m nltk.downloader -d "${NLTK_DATA}" averaged_perceptron_tagger_eng averaged_perceptron_tagger cmudict \
    && apt-get purge -y build-essential cmake python3-dev \
    && apt-get autoremove -y

COPY addon/rootfs /

HEALTHCHECK --start-period=10m --interval=60s --timeout=20s \
    CMD wyoming-gsv-healthcheck --port 10200 --timeout 15

LABEL io.hass.type="addon" \
      io.hass.version="${BUILD_VERSION}" \
      io.hass.arch="${BUILD_ARCH}"

# XTTS Studio. GPU image (default):  docker build -t xtts-studio .
# CPU-only image (smaller base):     docker build --build-arg BASE_IMAGE=ubuntu:22.04 -t xtts-studio:cpu .
# Run with docker compose (see docker-compose.yml) or:
#   docker run --gpus all -p 7860:7860 -v ./models:/app/models -v ./outputs:/app/outputs xtts-studio
ARG BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04
FROM ${BASE_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 XTTS_STUDIO_VENV=/opt/venv
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3.11-dev build-essential ffmpeg ca-certificates \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.txt requirements-rvc.txt ./
COPY scripts/install.sh scripts/install.sh
RUN scripts/install.sh && rm -rf /root/.cache/pip
COPY . .

RUN useradd --create-home --uid 1000 studio \
 && mkdir -p /app/models /app/outputs \
 && chown -R studio:studio /app/models /app/outputs
USER studio

ENV XTTS_STUDIO_HOST=0.0.0.0 XTTS_STUDIO_PORT=7860 HF_HOME=/app/models/hf-cache
EXPOSE 7860
VOLUME ["/app/models", "/app/outputs"]
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s --retries=3 \
  CMD ["/opt/venv/bin/python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('XTTS_STUDIO_PORT', '7860'), timeout=4)"]
CMD ["/opt/venv/bin/python", "webui.py"]

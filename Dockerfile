# XTTS Studio on a CUDA GPU host. Build: docker build -t xtts-studio .
# Run:   docker run --gpus all -p 7860:7860 -v $PWD/models:/app/models -v $PWD/outputs:/app/outputs xtts-studio
# (Compose file, non-root user and health check come with the serving work.)
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 XTTS_STUDIO_VENV=/opt/venv
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3.11-dev build-essential ffmpeg ca-certificates \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.txt requirements-rvc.txt ./
COPY scripts/install.sh scripts/install.sh
RUN scripts/install.sh && rm -rf /root/.cache/pip
COPY . .

ENV XTTS_STUDIO_HOST=0.0.0.0 XTTS_STUDIO_PORT=7860
EXPOSE 7860
VOLUME ["/app/models", "/app/outputs"]
CMD ["/opt/venv/bin/python", "webui.py"]

# Graphite of the local variant: Debian's carbon-cache (whisper files in
# the volume docker-compose.yml mounts at /opt/graphite/storage), and
# whisper-fetch to read them.
ARG BASE=debian:bookworm-slim
FROM ${BASE}
RUN apt-get update && apt-get install -y --no-install-recommends graphite-carbon python3-whisper \
    && rm -rf /var/lib/apt/lists/*
COPY carbon.conf storage-schemas.conf /etc/carbon/
ENTRYPOINT ["carbon-cache", "--config=/etc/carbon/carbon.conf", "--nodaemon", "--pidfile=/tmp/carbon.pid", "start"]

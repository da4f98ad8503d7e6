# Development image for machines with Docker: Debian 12, Debian's mosquitto, fieldkit in a venv.
FROM debian:12-slim

RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv mosquitto ca-certificates \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/fieldkit
COPY pyproject.toml README.md ./
COPY services ./services
COPY etc ./etc
RUN python3 -m venv /opt/fieldkit/venv \
 && /opt/fieldkit/venv/bin/pip install --no-cache-dir . \
 && useradd --system --uid 990 --no-create-home --shell /usr/sbin/nologin fieldkit

ENV PATH=/opt/fieldkit/venv/bin:$PATH \
    FIELDKIT_CONFIG=/opt/fieldkit/etc/docker-tablet.toml
USER fieldkit
CMD ["fieldkit", "up"]

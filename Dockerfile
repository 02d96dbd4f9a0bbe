# syntax=docker/dockerfile:1
# The groundstation image: the ingest service, the simulators and the CLI
# (`groundstation ingest`, `groundstation sim ...`, `groundstation dashboards ...`).
# docker-compose.yml builds it once and runs it as several services.
FROM python:3.11.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, in a layer that survives edits to the source: install the project
# with empty packages, then remove it and keep what it pulled in.
COPY pyproject.toml README.md ./
RUN mkdir groundstation simulators \
    && touch groundstation/__init__.py simulators/__init__.py \
    && pip install . \
    && pip uninstall -y groundstation \
    && rm -rf groundstation simulators build ./*.egg-info

# The source. Installed in place (editable), so the package finds telemetry_defs/,
# deploy/ and dashboards/ beside it, as in a checkout.
COPY groundstation/ groundstation/
COPY simulators/ simulators/
COPY telemetry_defs/ telemetry_defs/
COPY deploy/ deploy/
COPY dashboards/ dashboards/
RUN pip install --no-deps -e . \
    && groundstation defs check \
    && useradd --system --uid 10001 --home-dir /var/lib/groundstation --no-create-home \
        groundstation \
    && mkdir -p /var/lib/groundstation \
    && chown groundstation:groundstation /var/lib/groundstation

# State (archive, quarantine, spool) lives in /var/lib/groundstation, a volume in compose.
WORKDIR /var/lib/groundstation
USER groundstation

CMD ["groundstation", "--help"]

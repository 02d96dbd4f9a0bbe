# syntax=docker/dockerfile:1
# The groundstation image: the ingest service, the simulators and the CLI
# (`groundstation ingest`, `groundstation sim ...`, `groundstation dashboards ...`).
# docker-compose.yml builds it once and runs it as several services.
FROM python:3.11.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /src

# Dependencies first, in a layer that survives edits to the source: the list is read from
# pyproject.toml alone (tomllib is in the standard library), so only a change there or in
# the constraints reinstalls them. constraints.txt (scripts/update-constraints.sh) pins
# every distribution to the version the tests ran with, so two builds install the same.
# The core dependencies only: no extras (matplotlib, the drills' picture, stays out).
COPY pyproject.toml constraints.txt ./
RUN python -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb")); print("\n".join(p["project"]["dependencies"]))' \
        > /tmp/requirements.txt \
    && pip install -c constraints.txt -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The project, installed as any package is: pip builds the wheel (the definitions, the
# deployment files and the dashboards travel inside it, under groundstation/_data/) and
# finds its dependencies already there. The source is then removed, so what runs is the
# installed package; `defs check` proves it finds its data.
COPY README.md ./
COPY groundstation/ groundstation/
COPY simulators/ simulators/
COPY telemetry_defs/ telemetry_defs/
COPY deploy/ deploy/
COPY dashboards/ dashboards/
RUN pip install -c constraints.txt . \
    && cd / && rm -rf /src \
    && groundstation defs check \
    && useradd --system --uid 10001 --home-dir /var/lib/groundstation --no-create-home \
        groundstation \
    && mkdir -p /var/lib/groundstation \
    && chown groundstation:groundstation /var/lib/groundstation

# State (archive, quarantine, spool) lives in /var/lib/groundstation, a volume in compose.
WORKDIR /var/lib/groundstation
USER groundstation

CMD ["groundstation", "--help"]

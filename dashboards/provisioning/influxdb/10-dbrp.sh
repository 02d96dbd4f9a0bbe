#!/bin/bash
# InfluxDB 2.x init script (docker-compose.yml mounts this directory at
# /docker-entrypoint-initdb.d). The influxdb image runs it once, when it sets up an empty
# data volume, after creating the org, the bucket and the admin token from the
# DOCKER_INFLUXDB_INIT_* variables; the influx CLI is already configured with that token
# and DOCKER_INFLUXDB_INIT_BUCKET_ID holds the new bucket's id.
#
# It maps an InfluxQL database and retention policy (DBRP) onto the bucket, so that
# InfluxQL, which the Grafana consoles speak through /query, reaches the data the ingest
# writes with the v2 API: database "$INFLUXQL_DATABASE" (default: the bucket's name),
# retention policy "autogen", the default one.
set -euo pipefail

db="${INFLUXQL_DATABASE:-${DOCKER_INFLUXDB_INIT_BUCKET}}"
influx v1 dbrp create \
    --org "${DOCKER_INFLUXDB_INIT_ORG}" \
    --bucket-id "${DOCKER_INFLUXDB_INIT_BUCKET_ID}" \
    --db "${db}" \
    --rp autogen \
    --default
influx v1 dbrp list --org "${DOCKER_INFLUXDB_INIT_ORG}"

"""The ingest service: telemetry from MQTT to InfluxDB, consoles and the archive."""

"""InfluxDB: line protocol of every measurement, the v1/v2 transports, the batching,
retrying, spooling sink."""

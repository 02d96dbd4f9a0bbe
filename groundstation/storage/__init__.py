"""Durable storage: the raw frame archive and quarantine, the catalogue of passes, export,
and InfluxDB (line protocol, transports, the spooling sink)."""

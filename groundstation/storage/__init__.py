"""Durable storage: the file primitives every durable file shares (durable), the raw frame
archive and quarantine (archive), the on-disk queue (spool), the catalogue of passes, export,
and InfluxDB (line protocol, transports, the spooling sink)."""

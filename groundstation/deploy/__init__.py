"""Launchers of the real servers (Mosquitto, InfluxDB, the embedded broker) for tests and
the demo, and the broker's password file and ACL."""

"""Simulated ASTP vehicles: they encode frames with the same definitions the ingest uses."""

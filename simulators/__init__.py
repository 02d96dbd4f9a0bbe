"""Simulated ASTP vehicles: the mission timeline, subsystem models, sensors and the PCM
downlink of Apollo CSM and Soyuz 19. They encode frames with the same telemetry definitions
the ingest decodes with. See simulators/README.md."""

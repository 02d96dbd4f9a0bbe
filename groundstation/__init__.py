"""groundstation: a mission-control telemetry ground station for the Apollo-Soyuz Test Project."""

__version__ = "0.1.0"

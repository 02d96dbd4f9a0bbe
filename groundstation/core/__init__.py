"""The pure core: telemetry definitions, units, the wire envelope, the decommutator and
encoder, limits and alarms, the topic layout and message types, mission time and the
flight plan, and the display model. No sockets, no asyncio, no MQTT client."""

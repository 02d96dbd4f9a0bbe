"""The command path: operators' commands checked against the command definitions and the
operators' rights, stamped, sent to the ships, followed through their stages and verified
in the telemetry (engine: the logic; service: MQTT and storage; operators: who may command)."""

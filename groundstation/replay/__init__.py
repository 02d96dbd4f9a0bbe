"""Replay of recorded passes through the broker, and the replay session protocol."""

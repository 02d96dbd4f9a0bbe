"""The terminal console (Textual): the app, its MQTT feed and what each centre shows."""

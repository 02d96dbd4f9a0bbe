"""The Grafana console generator (dashboards/*.json is its output) and the push to a
running Grafana."""

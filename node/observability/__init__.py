"""Observability: metrics, logs, the dashboard's history."""

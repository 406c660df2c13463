"""Observability: Prometheus metrics (metrics.py), structured logs (logs.py), usage accounting (usage.py) and
OpenTelemetry traces (tracing.py)."""

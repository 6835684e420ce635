"""Deployment stages: export and latency."""

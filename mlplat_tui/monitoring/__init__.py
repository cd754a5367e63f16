"""Monitoring on the control plane: drift reports, alerts and replay of captured traffic."""

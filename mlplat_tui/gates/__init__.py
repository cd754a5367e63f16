"""Guardrails: gate evaluation and the platform policy floors."""

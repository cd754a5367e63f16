"""CLI: placeholder until its issue lands."""

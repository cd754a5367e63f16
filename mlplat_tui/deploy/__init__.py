"""Serving a bundle on a target, recorded as a deployment or a rollback."""

"""Hydra entry points, one per job kind."""

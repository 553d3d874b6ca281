"""Cluster: config, driver, placement, metrics, checkpoints and the CLI."""

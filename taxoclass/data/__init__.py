"""Taxonomy, dataset readers and validation."""

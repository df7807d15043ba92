"""Orchestration on Ray: thin wrappers that call the engine (the only package that imports ray)."""

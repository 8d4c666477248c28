"""Datasets and paired transforms (import the submodules directly)."""

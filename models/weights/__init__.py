"""Committed weights shipped with the package (loaded through importlib.resources)."""

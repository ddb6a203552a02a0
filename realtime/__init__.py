"""Sync_ai_vid engine runtime: audio features, face tracks, renderers, the real-time server and the CLI."""

__version__ = "0.1.0"

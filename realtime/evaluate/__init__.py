"""Lip-sync quality measurements of rendered videos (`syncvid eval-lipsync`, `syncvid eval-sync`)."""

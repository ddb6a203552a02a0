"""The virtual camera's start-up: one-line errors for what a user can get wrong (no v4l2loopback, no
PortAudio, no microphone, a busy device), the device listing, and frames fitted to the camera."""

from __future__ import annotations

import builtins
import os

import numpy as np
import pytest
from vcam_fakes import BUSY_DEVICE

import realtime.cli
from realtime.vcam import VcamError
from realtime.vcam import camera as camera_mod
from realtime.vcam.camera import (
    MODPROBE,
    FrameFit,
    open_camera,
    open_error_message,
    video_devices,
)


@pytest.fixture
def syncvid(monkeypatch, capsys):
    """``syncvid(*argv) -> (exit status, stdout, stderr)`` with ``vcam`` among the subcommands."""
    if "vcam" not in realtime.cli.SUBCOMMANDS:
        monkeypatch.setattr(realtime.cli, "SUBCOMMANDS", [*realtime.cli.SUBCOMMANDS, "vcam"])

    def run(*argv: str) -> tuple[int, str, str]:
        status = realtime.cli.main(list(argv))
        out, err = capsys.readouterr()
        return status, out, err

    return run


def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("syncvid vcam: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("message,device,says", [
    (("No v4l2 loopback device found at /dev/video[0-99]. Did you run 'modprobe v4l2loopback'? See also "
      "pyvirtualcam's documentation."), None, MODPROBE),
    ("Device /dev/video9 does not exist.", "/dev/video9", "/dev/video9 does not exist: load the v4l2loopback"),
    ("Device /dev/video4 could not be opened: Device or resource busy", "/dev/video4", "/dev/video4 is busy"),
    ("Virtual camera device /dev/video4 could not be configured: Device or resource busy", "/dev/video4", "is busy"),
    ("All v4l2 loopback devices at /dev/video[0-99] are busy. Is another process using them?", None, "is busy"),
    ("Device /dev/video4 is already in use.", "/dev/video4", "is busy"),
    ("Device /dev/video0 is not a video output device.", "/dev/video0", "not a v4l2loopback device"),
    ("Could not access /dev/video4 due to missing permissions. Did you add your user to the 'video' group?",
     "/dev/video4", "video group"),
])
def test_each_pyvirtualcam_error_becomes_one_sentence_saying_what_to_do(message, device, says):
    text = open_error_message(message, device)
    assert says in text and "\n" not in text


def test_no_v4l2loopback_device_names_the_modprobe_line():
    if any(virtual for _, _, virtual in video_devices()):
        pytest.skip("this machine has a v4l2loopback device")
    with pytest.raises(VcamError) as e:
        open_camera(64, 64, 25, backend="v4l2loopback")
    assert f"`{MODPROBE}`" in str(e.value) and str(e.value).startswith("no v4l2loopback device")


def test_unknown_backend_names_the_ones_there_are(recording_backend):
    with pytest.raises(VcamError, match="unknown camera backend 'obs'.*recording"):
        open_camera(64, 64, 25, backend="obs")


def test_a_busy_camera_fails_in_one_line_before_any_model_loads(syncvid, arctic_wav, default_avatar,
                                                              recording_backend, monkeypatch):
    import realtime.server.engine

    monkeypatch.setattr(realtime.server.engine, "build_engine", lambda *a, **k: pytest.fail("models loaded"))
    status, _, err = syncvid("vcam", "--audio", str(arctic_wav), "--avatar", str(default_avatar.directory),
                             "--backend", "recording", "--device", BUSY_DEVICE)
    assert status == 2 and f"{BUSY_DEVICE} is busy" in one_line_error(err)


def test_no_portaudio_is_one_line_naming_the_package(syncvid, monkeypatch):
    real_import = builtins.__import__

    def no_portaudio(name, *args, **kw):
        if name == "sounddevice":
            raise OSError("PortAudio library not found")
        return real_import(name, *args, **kw)

    monkeypatch.delitem(__import__("sys").modules, "sounddevice", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_portaudio)
    status, _, err = syncvid("vcam", "--mic")
    line = one_line_error(err)
    assert status == 2 and "no PortAudio" in line and "libportaudio2" in line and "--audio FILE" in line


def test_no_microphone_and_an_unknown_one_are_one_line_each(syncvid, fake_sounddevice, arctic_wav):
    fake_sounddevice(default_input=-1)
    status, _, err = syncvid("vcam")  # the microphone is the default source
    assert status == 2 and "no input device" in one_line_error(err) and "--list-devices" in err
    fake_sounddevice()
    status, _, err = syncvid("vcam", "--mic", "Headset")
    assert status == 2 and "no input device 'Headset'" in one_line_error(err)
    status, _, err = syncvid("vcam", "--audio", str(arctic_wav), "--play-to", "Fake USB Mic")  # an input, not an output
    assert status == 2 and "no output device 'Fake USB Mic'" in one_line_error(err)


def test_a_busy_microphone_is_one_line(syncvid, fake_sounddevice, monkeypatch):
    sd = fake_sounddevice()

    def busy(**kw):
        raise sd.PortAudioError("Error opening InputStream: Device unavailable [PaErrorCode -9985]")

    monkeypatch.setattr(sd, "InputStream", busy)
    status, _, err = syncvid("vcam", "--mic", "0")
    assert status == 2 and "input device 0 cannot be opened" in one_line_error(err) and "busy" in err


def test_bad_options_are_rejected_before_anything_opens(syncvid, capsys):
    for argv, says in ((("--size", "641x480"), "even number"), (("--audio-delay", "soon"), "neither auto"),
                       (("--fps", "0"), "outside 1..60")):
        with pytest.raises(SystemExit) as e:
            syncvid("vcam", *argv)
        assert e.value.code == 2 and says in capsys.readouterr().err
    status, _, err = syncvid("vcam", "--loop")
    assert status == 2 and "--loop repeats --audio FILE" in one_line_error(err)


def test_list_devices_shows_cameras_and_audio_devices(syncvid, fake_sounddevice, tmp_path, monkeypatch):
    sysfs = tmp_path / "sys"
    for node, parent, name in (("video0", "devices/pci0000:00/usb1/video4linux", "Integrated Camera"),
                               ("video4", "devices/virtual/video4linux", "Dummy video device (0x0000)")):
        real = sysfs / parent / node
        real.mkdir(parents=True)
        (real / "name").write_text(name + "\n")
        (sysfs / "class/video4linux").mkdir(parents=True, exist_ok=True)
        os.symlink(real, sysfs / "class/video4linux" / node)
    monkeypatch.setattr(camera_mod, "SYS_VIDEO", sysfs / "class/video4linux")
    fake_sounddevice()
    status, out, _ = syncvid("vcam", "--list-devices")
    words = " ".join(out.split())
    assert status == 0
    assert "/dev/video4 Dummy video device (0x0000) [virtual: usable as --device]" in words
    assert "/dev/video0 Integrated Camera [a real camera]" in words
    assert "0 Fake USB Mic (1 in, 0 out) [default input]" in words
    assert "1 Loopback sink (0 in, 2 out) [default output]" in words
    monkeypatch.setattr(camera_mod, "SYS_VIDEO", tmp_path / "none")
    assert MODPROBE in syncvid("vcam", "--list-devices")[1]


def test_frames_are_fitted_to_the_camera_centred_on_black():
    image = np.full((100, 200, 3), 200, np.uint8)
    fit = FrameFit(320, 240)
    out = fit(image)
    assert out.shape == (240, 320, 3)
    assert out[:40].max() == 0 and out[200:].max() == 0 and out[40:200].min() == 200  # scaled 1.6x, bars above/below
    assert fit(image) is out  # a repeated frame is not resized again
    same = np.zeros((240, 320, 3), np.uint8)
    assert FrameFit(320, 240)(same) is same  # matching sizes: untouched

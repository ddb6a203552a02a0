"""The virtual camera device through pyvirtualcam: opening it with one-line errors, fitting the
avatar's frames to the camera's size, and listing the video devices.

On Linux pyvirtualcam writes to a v4l2loopback device (a kernel module); other backends (OBS's
virtual camera on macOS and Windows, or one registered with ``pyvirtualcam.register_backend``)
are chosen with ``backend``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from realtime.vcam import VcamError

log = logging.getLogger(__name__)

MODPROBE = "sudo modprobe v4l2loopback devices=1 exclusive_caps=1"  # exclusive_caps: Chrome lists it
LOOPBACK_HINT = f"load the v4l2loopback kernel module (package v4l2loopback-dkms): `{MODPROBE}`"
SYS_VIDEO = Path("/sys/class/video4linux")


class CameraSink(Protocol):
    """What the runner needs of a camera (``pyvirtualcam.Camera``)."""

    width: int
    height: int
    fps: float
    device: str

    def send(self, frame: np.ndarray) -> None: ...

    def close(self) -> None: ...


def open_error_message(message: str, device: str | None) -> str:
    """One sentence for pyvirtualcam's error ``message`` on opening ``device`` (None: the first free)."""
    first = message.strip().splitlines()[0] if message.strip() else "unknown error"
    low = message.lower()
    name = device or "the virtual camera"
    if "no v4l2 loopback device found" in low:
        return f"no v4l2loopback device: {LOOPBACK_HINT}, then run again"
    if "does not exist" in low:
        return f"{name} does not exist: {LOOPBACK_HINT}, or pass a device that --list-devices shows"
    if "busy" in low or "already in use" in low:
        return (f"{name} is busy: another program is writing to it; close it, or add a second device "
                f"(`sudo modprobe -r v4l2loopback && sudo modprobe v4l2loopback devices=2 exclusive_caps=1`) "
                f"and pass it as --device")
    if "permission" in low:
        return f"no permission to write to {name}: add yourself to the video group (`sudo usermod -aG video $USER`, then log in again)"
    if "not a video output device" in low or "not a v4l2 device" in low:
        return f"{name} is not a v4l2loopback device (a real camera?): pass one that --list-devices marks as virtual"
    return f"{name} cannot be opened ({first})"


def open_camera(width: int, height: int, fps: float, device: str | None = None,
                backend: str | None = None) -> CameraSink:
    """A ``pyvirtualcam.Camera`` taking RGB frames of ``width`` x ``height``; ``VcamError`` with one
    line saying what to do when it cannot open."""
    try:
        import pyvirtualcam  # native backends (v4l2loopback, OBS): only the camera command needs them
    except ImportError:
        raise VcamError("the pyvirtualcam package is missing: install it (`pip install pyvirtualcam`)") from None
    known = sorted(pyvirtualcam.camera.BACKENDS)
    if backend is not None and backend not in known:
        raise VcamError(f"unknown camera backend {backend!r}: this system has {', '.join(known) or 'none'}")
    if not known:
        raise VcamError("pyvirtualcam has no camera backend on this system (Linux: v4l2loopback; macOS and "
                        "Windows: OBS's virtual camera)")
    try:
        return pyvirtualcam.Camera(width, height, fps, fmt=pyvirtualcam.PixelFormat.RGB, device=device,
                                   backend=backend)
    except (RuntimeError, ValueError, OSError) as e:
        raise VcamError(open_error_message(str(e), device)) from None


class FrameFit:
    """The avatar's frames at the camera's size: scaled to fit, centred on black (the whole face
    stays in view; no resizing when the sizes match). A repeated frame reuses the last result."""

    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self._last: tuple[int, np.ndarray] | None = None

    def __call__(self, image: np.ndarray) -> np.ndarray:
        h, w = image.shape[:2]
        if (w, h) == (self.width, self.height):
            return np.ascontiguousarray(image)
        if self._last is not None and self._last[0] == id(image):
            return self._last[1]
        scale = min(self.width / w, self.height / h)
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        resized = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
        out = np.zeros((self.height, self.width, 3), np.uint8)
        y, x = (self.height - nh) // 2, (self.width - nw) // 2
        out[y : y + nh, x : x + nw] = resized
        self._last = (id(image), out)
        return out


def video_devices(sys_root: Path | None = None) -> list[tuple[str, str, bool]]:
    """(``/dev/videoN``, name, virtual) of every video device the kernel lists; virtual ones
    (v4l2loopback's) have no hardware behind them (their sysfs node is under devices/virtual)."""
    sys_root = sys_root or SYS_VIDEO
    if not sys_root.is_dir():
        return []
    out = []
    for node in sorted(sys_root.glob("video*"), key=lambda p: int(p.name[5:]) if p.name[5:].isdigit() else 1 << 30):
        try:
            name = (node / "name").read_text().strip()
        except OSError:
            name = "?"
        out.append((f"/dev/{node.name}", name, "/virtual/" in os.path.realpath(node)))
    return out


def video_device_lines(sys_root: Path | None = None) -> list[str]:
    devices = video_devices(sys_root)
    if not devices:
        return [f"  none: {LOOPBACK_HINT}"]
    lines = [f"  {path:<14} {name}" + ("  [virtual: usable as --device]" if virtual else "  [a real camera]")
             for path, name, virtual in devices]
    if not any(v for _, _, v in devices):
        lines.append(f"  no virtual one: {LOOPBACK_HINT}")
    return lines

"""Bad files given to `syncvid render` and `syncvid prepare-avatar`: empty, text under a media
name, truncated, a folder, a missing path, a photo without a face. Each run ends with a non-zero
status and exactly one line on stderr naming the file (no traceback), as a real run's stderr is:
the CLI's own logging set up as ``main`` sets it."""

from __future__ import annotations

import logging
from fractions import Fraction

import numpy as np
import pytest
from scipy.io import wavfile

from realtime.cli import main


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNCVID_CACHE_DIR", str(tmp_path / "cache"))


def run(argv: list[str]) -> int:
    """``main(argv)`` with the root logger as a fresh process has it, so ``main``'s
    ``basicConfig`` sends log lines to stderr (captured) as a real run does; pytest's own
    handlers (added for each test phase) come back after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    root.handlers = []
    try:
        return main(argv)
    finally:
        root.handlers = handlers
        root.setLevel(level)


def _video(path, n: int = 10) -> bytes:
    import av

    y, x = np.mgrid[0:64, 0:64]
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(25))
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(n):
            img = np.stack([(x * 4 + i) % 256, y * 4, x * 0 + 128], -1).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path.read_bytes()


@pytest.fixture
def files(tmp_path):
    """The bad (and a few good) inputs, by name."""
    import cv2

    d = tmp_path / "in"
    d.mkdir()
    (d / "folder.wav").mkdir()
    (d / "folder.mp4").mkdir()
    (d / "folder.jpg").mkdir()
    (d / "not_an_avatar").mkdir()
    (d / "not_an_avatar" / "notes.txt").write_text("hello")
    text = "this is a text file, not media\n" * 20
    for name in ("empty.wav", "empty.mp4", "empty.jpg"):
        (d / name).write_bytes(b"")
    for name in ("text.wav", "text.mp4", "text.jpg", "text_avatar"):
        (d / name).write_text(text)
    t = np.arange(16000) / 16000
    wavfile.write(d / "good.wav", 16000, (0.3 * np.sin(2 * np.pi * 180 * t) * 32767).astype(np.int16))
    wav = (d / "good.wav").read_bytes()
    (d / "truncated.wav").write_bytes(wav[: len(wav) // 3])
    mp4 = _video(d / "good.mp4")
    (d / "truncated.mp4").write_bytes(mp4[: len(mp4) * 2 // 3])  # the index (moov) is at the end: lost
    (d / "header_only.mp4").write_bytes(mp4[:64])
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:240, 0:320]
    landscape = np.stack([x * 255 // 320, y * 255 // 240, 0 * x + 90], -1) + rng.integers(0, 20, (240, 320, 3))
    cv2.imwrite(str(d / "noface.png"), landscape.astype(np.uint8))
    ok, jpg = cv2.imencode(".jpg", landscape.astype(np.uint8))
    (d / "truncated.jpg").write_bytes(jpg.tobytes()[:200])
    return d


RENDER_AUDIO = ["empty.wav", "text.wav", "truncated.wav", "folder.wav", "missing.wav", "text.mp4", "header_only.mp4"]
RENDER_SOURCE = [("--image", "empty.jpg"), ("--image", "text.jpg"), ("--image", "truncated.jpg"),
                 ("--image", "folder.jpg"), ("--image", "missing.jpg"), ("--image", "noface.png"),
                 ("--video", "empty.mp4"), ("--video", "text.mp4"), ("--video", "truncated.mp4"),
                 ("--video", "header_only.mp4"), ("--video", "folder.mp4"), ("--video", "missing.mp4"),
                 ("--avatar", "not_an_avatar"), ("--avatar", "text_avatar"), ("--avatar", "missing_avatar")]
PREPARE = [("--image", "empty.jpg"), ("--image", "text.jpg"), ("--image", "truncated.jpg"), ("--image", "folder.jpg"),
           ("--image", "missing.jpg"), ("--image", "noface.png"), ("--video", "empty.mp4"), ("--video", "text.mp4"),
           ("--video", "truncated.mp4"), ("--video", "header_only.mp4"), ("--video", "folder.mp4"),
           ("--video", "missing.mp4"), ("--video", "text.wav")]


def one_error_line(capsys, command: str, name: str) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"syncvid {command}: error: ") and name in lines[0], lines[0]
    assert "Traceback" not in err
    if name.startswith("folder"):
        assert "is a folder" in lines[0] or "is a directory" in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("name", RENDER_AUDIO)
def test_render_refuses_bad_audio_in_one_line(files, tmp_path, capsys, name):
    argv = ["render", "--image", str(files / "noface.png"), "--audio", str(files / name),
            "--out", str(tmp_path / "out.mp4"), "--no-progress"]
    assert run(argv) == 2
    one_error_line(capsys, "render", name)
    assert not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize("flag, name", RENDER_SOURCE)
def test_render_refuses_a_bad_face_source_in_one_line(files, tmp_path, capsys, flag, name):
    argv = ["render", flag, str(files / name), "--audio", str(files / "good.wav"), "--out", str(tmp_path / "out.mp4"),
            "--no-progress"]
    assert run(argv) == 2
    one_error_line(capsys, "render", name)
    assert not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize("flag, name", PREPARE)
def test_prepare_avatar_refuses_a_bad_file_in_one_line(files, tmp_path, capsys, flag, name):
    out = tmp_path / "avatar"
    assert run(["prepare-avatar", flag, str(files / name), "--out", str(out), "--no-progress"]) == 2
    one_error_line(capsys, "prepare-avatar", name)
    assert not out.exists() and not list(tmp_path.glob(".avatar.tmp-*"))  # nothing half-written left

"""A newcomer's first mistakes: each is one line naming the input and what to do, exit status 2,
nothing leaked; and the server's own start and stop say what they do."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from realtime.cli import main

REPO = Path(__file__).resolve().parents[3]


def _syncvid(*args: str, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "realtime.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env={**os.environ, **(env or {})})


def _errors(stderr: str) -> list[str]:
    """stderr without the timestamped log lines."""
    return [line for line in stderr.splitlines() if line.strip() and not line[:4].isdigit()]


def test_serve_on_a_busy_port_fails_before_loading_models():
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        t0 = time.monotonic()
        r = _syncvid("serve", "--port", str(port))
        seconds = time.monotonic() - t0
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        f"syncvid serve: error: port {port} on 127.0.0.1 is already in use (another syncvid serve?): stop that "
        "program, or pick another port with --port N (--port 0 takes any free one)"]
    assert "inference process" not in r.stderr and seconds < 20  # no model was loaded


@pytest.mark.parametrize("port", ["99999", "-1"])
def test_serve_port_out_of_range(port, capsys):
    assert main(["serve", "--port", port]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "port must be 0..65535" in err[0] and port in err[0]


def test_serve_bind_failure_after_the_models_loaded_frees_everything(tmp_path):
    """The port taken between the check and the bind: one line, exit 2, no shared memory left."""
    code = ("import sys, realtime.cli.serve as s; s.check_bindable = lambda host, port: None; "
            "from realtime.cli import main; sys.exit(main(sys.argv[1:]))")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        r = subprocess.run([sys.executable, "-c", code, "serve", "--port", str(port)], capture_output=True,
                           text=True, timeout=120, cwd=REPO,
                           env={**os.environ, "SYNCVID_CACHE_DIR": str(tmp_path / "cache")})
    assert r.returncode == 2, r.stderr
    assert "inference process" in r.stderr  # the models had loaded
    assert _errors(r.stderr) == [f"syncvid serve: error: port {port} on 127.0.0.1 is already in use (another "
                                 "syncvid serve?): stop that program, or pick another port with --port N "
                                 "(--port 0 takes any free one)"]
    assert "leaked" not in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("argv, usage, hint", [
    (["serve", "--prot", "9000"], "usage: syncvid serve", "unrecognized option --prot (did you mean --port?)"),
    (["render", "--imgae", "x"], "usage: syncvid render", "unrecognized option --imgae (did you mean --image?)"),
    (["bench", "mouth", "--frmes", "3"], "usage: syncvid bench mouth",
     "unrecognized option --frmes (did you mean --frames?)"),
])
def test_misspelt_option_names_the_subcommand_and_the_option(argv, usage, hint, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert err.startswith(usage) and err.strip().splitlines()[-1].endswith(hint)


def test_abbreviated_and_equals_options_still_parse(tmp_path, capsys):
    # --no-prog is an unambiguous prefix of --no-progress; --fps=25 carries its value
    assert main(["render", "--image", str(tmp_path / "none.png"), "--audio", str(tmp_path / "none.wav"),
                 "--out", str(tmp_path / "o.mp4"), "--fps=25", "--no-prog"]) == 2
    assert "none.wav" in capsys.readouterr().err  # reached the command itself


def test_render_photo_without_face_is_an_error(tmp_path, arctic_wav, capsys):
    grey = tmp_path / "grey.png"
    cv2.imwrite(str(grey), np.full((256, 256, 3), 128, np.uint8))
    out = tmp_path / "out.mp4"
    rc = main(["render", "--image", str(grey), "--audio", str(arctic_wav), "--out", str(out), "--no-progress"])
    err = _errors(capsys.readouterr().err)
    assert rc == 2 and not out.exists()
    assert err == [f"syncvid render: error: photo {grey} has no face that FaceMesh can find: give a photo with "
                   "one clearly visible, roughly frontal face, at least about 100 px across"]


def test_serve_missing_avatar_fails_before_loading_models(tmp_path):
    r = _syncvid("serve", "--port", "0", "--avatar", str(tmp_path / "me.jpg"))
    assert r.returncode == 2 and "inference process" not in r.stderr
    assert _errors(r.stderr) == [f"syncvid serve: error: avatar {tmp_path / 'me.jpg'} does not exist: pass a face "
                                 "photo, a video, or a folder made by `syncvid prepare-avatar`"]


@pytest.mark.parametrize("how", ["SIGTERM", "Ctrl-C"])
def test_serve_prepares_a_photo_says_when_ready_and_stops_cleanly(tmp_path, how):
    """``how``: SIGTERM to the server (a service manager), or SIGINT to its whole process group, the
    inference process included (Ctrl-C in a terminal)."""
    import skimage.data

    photo = tmp_path / "me.png"
    cv2.imwrite(str(photo), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    cache = tmp_path / "cache"
    proc = subprocess.Popen([sys.executable, "-m", "realtime.cli", "serve", "--port", "0", "--avatar", str(photo)],
                            cwd=REPO, env={**os.environ, "SYNCVID_CACHE_DIR": str(cache)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 120
        while not any("ready: serving on http://127.0.0.1:" in line for line in lines):
            line = proc.stdout.readline()
            assert line or proc.poll() is None, "".join(lines)
            assert time.monotonic() < deadline, "".join(lines)
            lines.append(line)
        prepared = list((cache / "avatars").glob("image-*-256/avatar.json"))
        assert len(prepared) == 1  # the photo, prepared once into the cache
        port = int(next(line for line in lines if "ready: serving on" in line).split("127.0.0.1:")[1].split("/")[0])
        ws = _open_sdk_session(port)  # a live session, which the stop must close with 1001
        t0 = time.monotonic()
        if how == "SIGTERM":
            proc.send_signal(signal.SIGTERM)
        else:
            os.killpg(proc.pid, signal.SIGINT)
        code = _close_code(ws)
        rest, _ = proc.communicate(timeout=30)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    log = "".join(lines) + rest
    assert proc.returncode == 0, log
    sig = "SIGTERM" if how == "SIGTERM" else "SIGINT"
    assert f"{sig} received: closing 1 session(s) and stopping" in rest and rest.rstrip().endswith("stopped")
    assert code == 1001 and took < 5.0, (code, took)  # going away; the whole stop within 5 s
    while (left := _group_members(proc.pid)) and time.monotonic() < t0 + 5.0:
        time.sleep(0.05)  # a child still exiting
    assert not left, left  # within 5 s of the signal no process of the server's group is left
    for noise in ("Traceback", "leaked", "TensorFlow Lite", "W0000", "absl::InitializeLog"):
        assert noise not in log, log


def _open_sdk_session(port: int):
    import json

    from websockets.sync.client import connect

    ws = connect(f"ws://127.0.0.1:{port}/ws", open_timeout=10)
    ws.send(json.dumps({"type": "start", "options": {"video": "none"}}))
    assert json.loads(ws.recv(timeout=30))["event"] == "session_started"
    return ws


def _close_code(ws) -> int | None:
    from websockets.exceptions import ConnectionClosed

    try:
        while True:
            ws.recv(timeout=10)
    except ConnectionClosed:
        pass
    return ws.close_code


def _group_members(pgid: int) -> list[str]:
    """Command lines of the live processes in process group ``pgid`` (zombies excluded)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            if int(stat[2]) == pgid and stat[0] != "Z":
                found.append(open(f"/proc/{entry}/cmdline").read().replace("\0", " ").strip())
        except (OSError, IndexError, ValueError):
            continue
    return found

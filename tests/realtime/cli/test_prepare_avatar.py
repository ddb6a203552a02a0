from fractions import Fraction

import numpy as np
import pytest

from realtime.cli import main
from realtime.face.avatar import Avatar


def _write_video(path, n=6, fps=25):
    import av
    import skimage.data

    img = skimage.data.astronaut()[::2, ::2].copy()  # 256 x 256: the face is still ~60 px wide
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height, stream.pix_fmt = 256, 256, "yuv420p"
        stream.options = {"crf": "12", "preset": "ultrafast"}
        for i in range(n):
            frame = np.roll(img, i, axis=1) if i != 2 else np.zeros_like(img)
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def test_prepare_avatar_video_and_reload(tmp_path, capsys):
    video = _write_video(tmp_path / "in.mp4")
    out = tmp_path / "avatar"
    assert main(["prepare-avatar", "--video", str(video), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "6 frame(s) 256x256 at 25 fps" in printed and "1 without a face" in printed
    a = Avatar.load(out)
    assert a.num_frames == 6 and a.frames_without_face == [2] and not a.is_photo
    for name in ("avatar.json", "frames.npy", "landmarks.npy", "points3.npy", "face_affine.npy", "crops.npy", "mask.png"):
        assert (out / name).is_file(), name
    # --max-frames and re-preparing over an existing avatar directory
    assert main(["prepare-avatar", "--video", str(video), "--out", str(out), "--max-frames", "3",
                 "--resolution", "512", "--no-progress"]) == 0
    b = Avatar.load(out)
    assert b.num_frames == 3 and b.resolution == 512 and b.crop(0).shape == (512, 512, 3)


def test_prepare_avatar_image(tmp_path, capsys):
    import cv2
    import skimage.data

    path = tmp_path / "face.jpg"
    cv2.imwrite(str(path), cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR))
    assert main(["prepare-avatar", "--image", str(path), "--out", str(tmp_path / "av"), "--no-progress"]) == 0
    a = Avatar.load(tmp_path / "av")
    assert a.is_photo and a.num_frames == 1 and a.has_face(0)


@pytest.mark.parametrize("argv, message", [
    (["--image", "{tmp}/missing.png"], "does not exist"),
    (["--video", "{tmp}/missing.mp4"], "does not exist"),
    (["--image", "{tmp}/x.png", "--max-frames", "0"], "--max-frames"),
    (["--image", "{tmp}/face.png", "--vae", "{tmp}/no_vae_dir"], "no_vae_dir"),
])
def test_prepare_avatar_user_errors(tmp_path, capsys, argv, message):
    import cv2

    cv2.imwrite(str(tmp_path / "face.png"), np.full((64, 64, 3), 128, np.uint8))
    argv = [a.format(tmp=tmp_path) for a in argv]
    assert main(["prepare-avatar", *argv, "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "syncvid prepare-avatar: error:" in err and message in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()

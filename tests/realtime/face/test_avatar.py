import json

import numpy as np
import pytest

from realtime.errors import MediaInputError
from realtime.face.avatar import Avatar, default_avatar, pingpong_index, prepare_avatar
from realtime.face.video_io import iter_video_frames, read_image, read_video


def test_pingpong_index_is_latentsync_loop():
    # LatentSync's loop_video: frames, reversed frames, frames, ... (end frames repeated)
    n = 4
    expected = [0, 1, 2, 3, 3, 2, 1, 0, 0, 1, 2, 3, 3, 2]
    assert [pingpong_index(i, n) for i in range(len(expected))] == expected
    assert [pingpong_index(i, 1) for i in range(5)] == [0] * 5
    with pytest.raises(IndexError):
        pingpong_index(-1, n)


def test_default_avatar_photo(default_avatar):
    a = default_avatar
    assert a.is_photo and a.num_frames == 1 and a.fps == 25.0
    assert a.size == (512, 512) and a.resolution == 256
    assert a.frame(12345).shape == (512, 512, 3) and a.frame(0).dtype == np.uint8
    assert a.has_face(7) and a.frames_without_face == []
    lm = a.landmarks(3)
    assert lm.shape == (478, 2) and lm.dtype == np.float32
    aff = a.affine(0)
    assert aff.shape == (2, 3) and aff.dtype == np.float32
    crop = a.crop(0)
    assert crop.shape == (256, 256, 3) and crop.dtype == np.uint8
    assert a.mask.shape == (256, 256) and a.mask.sum() == 38863.0
    # the mouth corners land inside the mask's repaint region of the aligned crop
    mouth = np.c_[lm[[61, 291, 13, 14]], np.ones(4)] @ aff.T.astype(np.float64)
    for x, y in mouth:
        assert a.mask[int(round(y)), int(round(x))] == 0.0
    assert 130 < mouth[:, 1].mean() < 175 and abs(mouth[:, 0].mean() - 128) < 12
    with pytest.raises(MediaInputError, match="without a VAE"):
        a.latents(0)


def test_default_avatar_roundtrip_and_cache(default_avatar, tmp_path):
    a = default_avatar
    out = a.paste_back(0, a.crop(0))
    import cv2

    inside = np.zeros(a.size, np.uint8)
    cv2.fillConvexPoly(inside, cv2.convexHull(a.landmarks(0).astype(np.int32)), 1)
    err = np.abs(out.astype(np.float64) - a.frame(0)).mean(axis=2)
    assert err[inside > 0].mean() < 2.0
    assert err[inside == 0].mean() < 0.1
    # a different background frame is respected where the mask is zero
    base = np.zeros_like(a.frame(0))
    assert a.paste_back(0, a.crop(0), base=base)[0, 0].tolist() == [0, 0, 0]
    # cached: loading again is the same data, no re-preparation
    again = default_avatar.__class__.load(a.directory)
    np.testing.assert_array_equal(again.crop(0), a.crop(0))


def test_default_avatar_prepares_once_and_recovers(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNCVID_CACHE_DIR", str(tmp_path / "cache"))
    a = default_avatar()
    assert a.directory == tmp_path / "cache" / "avatars" / "default"
    mtime = (a.directory / "avatar.json").stat().st_mtime_ns
    assert default_avatar().directory == a.directory
    assert (a.directory / "avatar.json").stat().st_mtime_ns == mtime
    (a.directory / "avatar.json").write_text("{broken")
    b = default_avatar()
    assert b.num_frames == 1 and b.has_face(0)
    assert not [p for p in a.directory.parent.iterdir() if p.name.startswith(".")]  # no temp dirs left


def test_video_with_blank_frame(astronaut, tmp_path, media):
    frames = media.shifted_astronaut_frames(astronaut, 8, blank=(4,))
    video = media.write_video(tmp_path / "drift.mp4", frames)
    a = prepare_avatar(video, tmp_path / "av", kind="video", progress=False)
    assert not a.is_photo and a.num_frames == 8 and a.fps == 25.0
    assert a.frames_without_face == [4] and a.meta.num_faces == 7
    assert not a.has_face(4) and a.landmarks(4) is None and a.affine(4) is None
    assert (a.crop(4) == 127).all()
    # a faceless frame passes through paste-back unchanged
    np.testing.assert_array_equal(a.paste_back(4, np.zeros((256, 256, 3), np.uint8)), a.frame(4))
    # the tracked face follows the 2 px / 1 px per frame drift
    d = a.landmarks(7)[1] - a.landmarks(0)[1]
    assert abs(d[0] - 14) < 3 and abs(d[1] - 7) < 3
    # the face does not change size: per-frame scales agree within FaceMesh's jitter; crops stay aligned
    scales = [np.sqrt(abs(np.linalg.det(a.face_affine(i)[:, :2]))) for i in range(8) if a.has_face(i)]
    assert max(scales) / min(scales) < 1.06
    c0, c7 = a.crop(0).astype(np.float64), a.crop(7).astype(np.float64)
    assert np.abs(c0 - c7)[64:192, 64:192].mean() < 12
    # ping-pong: index 8 is source frame 7, index 15 is source frame 0
    np.testing.assert_array_equal(a.frame(8), a.frame(7))
    np.testing.assert_array_equal(a.frame(15), a.frame(0))
    meta = json.loads((a.directory / "avatar.json").read_text())
    assert meta["frames_without_face"] == [4] and meta["num_frames"] == 8 and meta["version"] == 1
    reloaded = Avatar.load(a.directory)
    np.testing.assert_array_equal(reloaded.landmarks(2), a.landmarks(2))
    assert isinstance(reloaded._frames, np.memmap)


def test_video_resampled_to_25fps(tmp_path, media):
    rng = np.random.default_rng(0)
    frames = [np.full((48, 64, 3), 8 * i, np.uint8) for i in range(30)]  # 1 s at 30 fps, brightness = index
    frames[0] = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) // 4
    video = media.write_video(tmp_path / "v30.mp4", frames, fps=30)
    out = read_video(video)
    assert out.shape == (25, 48, 64, 3)
    # output frame k shows source frame floor(k * 30 / 25)
    levels = out[1:, 20:28, 28:36].mean(axis=(1, 2, 3)) / 8
    np.testing.assert_allclose(levels, [int(k * 30 / 25) for k in range(1, 25)], atol=0.5)
    assert len(list(iter_video_frames(video, max_frames=5))) == 5
    # prepare on a faceless video: every frame passes through and is counted, nothing crashes
    a = prepare_avatar(video, tmp_path / "noface", kind="video", max_frames=10, progress=False)
    assert a.num_frames == 10 and a.meta.num_faces == 0 and a.frames_without_face == list(range(10))
    np.testing.assert_array_equal(a.paste_back(3, a.crop(3)), a.frame(3))


def test_bad_media_errors(tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"this is not a video" * 10)
    with pytest.raises(MediaInputError, match="junk.mp4"):
        read_video(junk)
    with pytest.raises(MediaInputError, match="does not exist"):
        read_video(tmp_path / "missing.mp4")
    with pytest.raises(MediaInputError, match="junk.png"):
        (tmp_path / "junk.png").write_bytes(b"\x89PNG broken")
        read_image(tmp_path / "junk.png")
    with pytest.raises(MediaInputError, match="not a prepared avatar"):
        Avatar.load(tmp_path)
    (tmp_path / "notavatar").mkdir()
    (tmp_path / "notavatar" / "keep.txt").write_text("x")
    with pytest.raises(MediaInputError, match="not an avatar directory"):
        prepare_avatar(np.zeros((32, 32, 3), np.uint8), tmp_path / "notavatar", kind="image", progress=False)


def test_vae_latents_tiny(astronaut, tmp_path):
    vae_mod = pytest.importorskip("models.vae")
    torch = pytest.importorskip("torch")
    vae = vae_mod.tiny_autoencoder_kl(seed=0)
    a = prepare_avatar(astronaut, tmp_path / "lat", kind="image", vae=vae, progress=False)
    lat = a.latents(5)
    assert a.has_latents and lat.shape == (2, 4, 32, 32) and lat.dtype == np.float32
    x = torch.from_numpy(np.array(a.crop(0))).permute(2, 0, 1)[None].float() / 127.5 - 1
    with torch.no_grad():
        ref = vae_mod.encode_latents(vae, x)[0].numpy()
    np.testing.assert_allclose(lat[0], ref, atol=1e-5)
    assert np.abs(lat[1] - lat[0]).mean() > 1e-4  # masked crop encodes differently
    assert a.meta.latents["order"] == ["reference", "masked"]


def test_default_avatar_concurrent_first_use(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    cache = tmp_path / "c" / "default"
    with ThreadPoolExecutor(3) as pool:
        avatars = list(pool.map(lambda _: default_avatar(cache_dir=cache), range(3)))
    assert all(a.num_frames == 1 and a.has_face(0) for a in avatars)
    for a in avatars[1:]:
        np.testing.assert_array_equal(a.crop(0), avatars[0].crop(0))
    assert sorted(p.name for p in cache.parent.iterdir()) == ["default"]
    assert Avatar.load(cache).meta.source.startswith("skimage.data.astronaut")

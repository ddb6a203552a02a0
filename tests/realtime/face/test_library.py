"""The avatar library: names and kinds of a folder's entries, names that never leave the folder,
memory bounded by least-recent use, a photo prepared once (also with two sessions asking at once)."""

from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from realtime.errors import MediaInputError
from realtime.face import sources
from realtime.face.avatar import Avatar
from realtime.face.library import AvatarLibrary, UnknownAvatar, check_library_dir


def _prepared(src: Avatar, dst: Path) -> Path:
    """A prepared avatar folder copied from ``src``."""
    shutil.copytree(src.directory, dst)
    return dst


def _photo(src: Avatar, path: Path) -> Path:
    cv2.imwrite(str(path), cv2.cvtColor(np.asarray(src.frame(0)), cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture
def root(tmp_path, default_avatar) -> Path:
    """bob/ (prepared), anna.jpg (photo), clip.mp4 (video: never loaded here), notes.txt, an
    unprepared folder."""
    r = tmp_path / "avatars"
    r.mkdir()
    _prepared(default_avatar, r / "bob")
    _photo(default_avatar, r / "anna.jpg")
    (r / "clip.mp4").write_bytes(b"")
    (r / "notes.txt").write_text("not an avatar")
    (r / "empty").mkdir()
    return r


def test_names_kinds_and_describe(root, default_avatar, tmp_path):
    lib = AvatarLibrary(root, default_avatar, cache_dir=tmp_path / "cache")
    assert lib.names() == ["default", "anna", "bob", "clip"]
    assert lib.describe() == [{"name": "default", "kind": "default", "loaded": True},
                              {"name": "anna", "kind": "photo", "loaded": False},
                              {"name": "bob", "kind": "prepared", "loaded": False},
                              {"name": "clip", "kind": "video", "loaded": False}]
    assert lib.load("default") is default_avatar and lib.get("default") is default_avatar
    bob = lib.load("bob")
    assert bob.directory == root / "bob" and bob.num_frames == default_avatar.num_frames
    assert [d["loaded"] for d in lib.describe()] == [True, False, True, False]
    assert lib.resolve("bob") == root / "bob" and lib.resolve("anna") == root / "anna.jpg"
    assert lib.resolve("default") == default_avatar.directory


def test_the_folder_is_listed_again_and_a_changed_entry_loaded_again(root, default_avatar, tmp_path):
    lib = AvatarLibrary(root, default_avatar, cache_dir=tmp_path / "cache")
    (root / "zoe.PNG").write_bytes(b"")  # dropped in while the server runs; suffixes in any case
    assert lib.names()[-1] == "zoe"
    (root / "zoe.PNG").unlink()
    assert "zoe" not in lib.names()
    first = lib.load("bob")
    assert lib.load("bob") is first and lib.get("bob") is first
    st = (root / "bob" / "avatar.json").stat()
    os.utime(root / "bob" / "avatar.json", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # prepared again
    again = lib.load("bob")
    assert again is not first and lib.get("bob") is again


def test_name_clashes_are_resolved_in_a_fixed_order(tmp_path, default_avatar, caplog):
    r = tmp_path / "clash"
    r.mkdir()
    for name in ("anna.mp4", "anna.jpg", "zed.png", "zed.jpg", "zed.avi", "default.png", "mia.webm", "mia.bmp"):
        (r / name).write_bytes(b"")
    _prepared(default_avatar, r / "anna")
    lib = AvatarLibrary(r, default_avatar)
    with caplog.at_level("WARNING"):
        kinds = {d["name"]: d["kind"] for d in lib.describe()}
    assert list(kinds) == ["default", "anna", "mia", "zed"]
    assert kinds == {"default": "default", "anna": "prepared", "mia": "photo", "zed": "photo"}
    assert lib.resolve("zed") == r / "zed.jpg" and lib.resolve("mia") == r / "mia.bmp"
    shadowed = sorted(rec.getMessage().split()[2] for rec in caplog.records)
    assert shadowed == sorted(str(r / n) for n in ("anna.mp4", "anna.jpg", "zed.png", "zed.avi", "default.png",
                                                 "mia.webm"))
    caplog.clear()
    lib.names()
    assert not caplog.records  # logged once each


@pytest.mark.parametrize("name", ["../x", "/etc/passwd", "a/b", ".hidden", "..", ".", "", "bob/", "bob/../bob",
                                  "anna.jpg", "outside", "eve", "default\n", "Bob", 3])
def test_names_outside_the_listing_are_refused(root, default_avatar, tmp_path, name):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    _prepared(default_avatar, outside / "prepared")
    _photo(default_avatar, outside / "eve.png")
    (root / "outside").symlink_to(outside / "prepared")  # symlinks leading out of the folder
    (root / "eve.png").symlink_to(outside / "eve.png")
    _photo(default_avatar, root / ".hidden.png")
    _prepared(default_avatar, root / ".hidden")
    (root / "a").mkdir()
    _photo(default_avatar, root / "a" / "b.png")  # entries of subfolders are not avatars
    lib = AvatarLibrary(root, default_avatar, cache_dir=tmp_path / "cache")
    assert lib.names() == ["default", "anna", "bob", "clip"]
    for call in (lib.load, lib.get, lib.resolve):
        with pytest.raises(UnknownAvatar) as e:
            call(name)
        message = str(e.value)
        assert "\n" not in message and repr(name) in message and str(root) in message
        assert message.endswith("choose one of default, anna, bob, clip")
    assert isinstance(e.value, ValueError) and lib.loaded() == []


def test_a_symlink_inside_the_folder_is_an_avatar(root, default_avatar):
    (root / "robert").symlink_to(root / "bob")
    lib = AvatarLibrary(root, default_avatar)
    assert "robert" in lib.names() and lib.load("robert").num_frames == default_avatar.num_frames


def test_without_a_folder_only_the_default_is_offered(default_avatar):
    lib = AvatarLibrary(None, default_avatar)
    assert lib.names() == ["default"] and lib.describe() == [{"name": "default", "kind": "default", "loaded": True}]
    with pytest.raises(UnknownAvatar, match=r"avatar 'bob' is not available: this server has no avatar library "
                                            r"\(start it with --avatars DIR\); the only avatar is 'default'"):
        lib.get("bob")


def test_the_message_lists_the_first_few_names(tmp_path, default_avatar):
    r = tmp_path / "many"
    r.mkdir()
    for k in range(12):
        (r / f"p{k:02d}.png").write_bytes(b"")
    with pytest.raises(UnknownAvatar) as e:
        AvatarLibrary(r, default_avatar).load("nobody")
    assert str(e.value) == (f"avatar 'nobody' is not in the avatar library {r}: choose one of default, p00, p01, "
                            "p02, p03, p04, p05, p06 and 5 more")


def test_a_library_folder_that_is_not_one(tmp_path, default_avatar):
    with pytest.raises(MediaInputError, match=f"avatar library {tmp_path / 'no'} does not exist: pass --avatars"):
        AvatarLibrary(tmp_path / "no", default_avatar)
    (tmp_path / "f").write_text("")
    with pytest.raises(MediaInputError, match="is not a folder"):
        check_library_dir(tmp_path / "f")
    with pytest.raises(ValueError, match="max_loaded"):
        AvatarLibrary(None, default_avatar, max_loaded=0)


def test_least_recently_used_is_dropped(root, default_avatar):
    _prepared(default_avatar, root / "carl")
    lib = AvatarLibrary(root, default_avatar, max_loaded=1)
    bob = lib.load("bob")
    carl = lib.load("carl")
    assert lib.loaded() == ["carl"] and lib.get("carl") is carl
    assert lib.get("bob") is not bob and lib.loaded() == ["bob"]  # loaded again
    assert lib.get("default") is default_avatar and lib.loaded() == ["bob"]  # the default is not counted
    lib2 = AvatarLibrary(root, default_avatar, max_loaded=2)
    a, b = lib2.load("bob"), lib2.load("carl")
    lib2.get("bob")  # now the most recent
    lib2.load("default")
    _prepared(default_avatar, root / "dora")
    lib2.load("dora")
    assert lib2.loaded() == ["bob", "dora"] and lib2.get("bob") is a and b is not lib2.get("carl")


def test_a_photo_is_prepared_once_with_two_threads_asking_at_once(root, default_avatar, tmp_path, monkeypatch):
    real, calls = sources.prepare_avatar, []

    def slow_prepare(*args, **kwargs):
        calls.append(args[0])
        time.sleep(0.2)  # both threads are inside load() by now
        return real(*args, **kwargs)

    digest, hashed = sources.file_digest, []
    monkeypatch.setattr(sources, "prepare_avatar", slow_prepare)
    monkeypatch.setattr(sources, "file_digest", lambda path: (hashed.append(path), digest(path))[1])
    lib = AvatarLibrary(root, default_avatar, max_loaded=1, cache_dir=tmp_path / "cache")
    start, got = threading.Barrier(2), []

    def load() -> None:
        start.wait()
        got.append(lib.load("anna"))

    threads = [threading.Thread(target=load) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert len(got) == 2 and got[0] is got[1] and calls == [root / "anna.jpg"]
    anna = got[0]
    assert anna.is_photo and anna.meta.num_faces == 1 and anna.resolution == default_avatar.resolution
    assert anna.directory.parent == tmp_path / "cache" and anna.directory.name.startswith("image-")
    assert np.abs(anna.frame(0).astype(int) - default_avatar.frame(0)).mean() < 3  # the photo (JPEG round trip)
    lib.load("bob")  # drops anna from memory ...
    assert lib.loaded() == ["bob"]
    again = lib.load("anna")  # ... whose prepared copy is read from the cache (not even hashed again)
    assert again is not anna and again.directory == anna.directory and len(hashed) == 1
    fresh = AvatarLibrary(root, default_avatar, cache_dir=tmp_path / "cache").load("anna")  # a server restart
    assert fresh.directory == anna.directory and len(calls) == 1 and len(hashed) == 2
    shutil.rmtree(anna.directory)  # the cache cleared while the server runs
    lib.load("bob")
    assert lib.load("anna").directory == anna.directory and len(calls) == 2  # prepared again


def test_a_photo_without_a_face_is_a_clear_error(root, default_avatar, tmp_path):
    cv2.imwrite(str(root / "wall.png"), np.full((128, 128, 3), 128, np.uint8))
    lib = AvatarLibrary(root, default_avatar, cache_dir=tmp_path / "cache")
    with pytest.raises(MediaInputError, match="no face"):
        lib.load("wall")
    assert lib.loaded() == []

"""The inference process's avatars: the default always there, others loaded by folder on first
use, at most ``max_loaded`` of them kept (least recently used dropped), each with its own rest
frames."""

from __future__ import annotations

import shutil

import numpy as np

from realtime.inference.child import ChildAvatars
from tests.fakes import FakeRenderer


def test_the_child_keeps_a_bounded_number_of_avatars(default_avatar, tmp_path):
    folders = [str(shutil.copytree(default_avatar.directory, tmp_path / f"a{k}")) for k in range(4)]
    avatars = ChildAvatars(default_avatar, max_loaded=2)
    assert avatars.avatar(None) is default_avatar and avatars.avatar(str(default_avatar.directory)) is default_avatar
    first = avatars.avatar(folders[0])
    assert first.directory == tmp_path / "a0" and first is not default_avatar
    assert avatars.avatar(folders[0]) is first  # kept
    avatars.avatar(folders[1])
    avatars.avatar(folders[0])  # a0 is now the most recent
    avatars.avatar(folders[2])  # drops a1
    assert avatars.keys() == [folders[0], folders[2]]
    avatars.avatar(None)  # the default is not counted and drops nothing
    avatars.avatar(folders[3])
    assert avatars.keys() == [folders[2], folders[3]]
    again = avatars.avatar(folders[0])  # loaded again
    assert again is not first and avatars.keys() == [folders[3], folders[0]]


def test_each_avatar_has_its_own_rest_frames(default_avatar, tmp_path):
    neg = shutil.copytree(default_avatar.directory, tmp_path / "negative")
    np.save(neg / "frames.npy", 255 - np.load(neg / "frames.npy"))
    avatars, renderer = ChildAvatars(default_avatar, max_loaded=1), FakeRenderer()
    for key, want in ((None, default_avatar.frame(0)), (str(neg), 255 - default_avatar.frame(0))):
        avatar, rest = avatars.get(key)
        assert np.array_equal(rest.get(renderer, avatar, 0, 0), want)
    _, rest_before = avatars.get(str(neg))
    avatars.get(str(shutil.copytree(default_avatar.directory, tmp_path / "other")))  # drops "negative"
    _, rest_after = avatars.get(str(neg))
    assert rest_after is not rest_before and rest_after.misses == 0  # its rest frames went with it

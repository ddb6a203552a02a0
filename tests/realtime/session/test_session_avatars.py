"""Each live session shows the avatar it chose from the engine's library (SessionConfig.avatar):
two sessions on one engine, one worker and one shared rest-frame cache, each only ever sending
frames of its own avatar, speech and rest alike."""

from __future__ import annotations

import asyncio
import shutil

import numpy as np
import pytest
from live_helpers import drive, make_scheduler, stop

from realtime.face.library import AvatarLibrary, UnknownAvatar
from realtime.inference.worker import InferenceWorker
from realtime.session.shared import Engine
from tests.fakes import MOUTH, FakeEncoder, FakeRenderer


@pytest.fixture
def engine(tmp_path, default_avatar):
    """The default astronaut and "negative": the same prepared avatar with its frames inverted."""
    root = tmp_path / "avatars"
    root.mkdir()
    neg = shutil.copytree(default_avatar.directory, root / "negative")
    np.save(neg / "frames.npy", 255 - np.load(neg / "frames.npy"))
    worker, renderer = InferenceWorker(), FakeRenderer()
    e = Engine(avatar=default_avatar, renderer_factory=lambda la: renderer,
               encoder_factory=lambda la, fps: FakeEncoder(), worker=worker,
               avatars=AvatarLibrary(root, default_avatar))
    yield e
    worker.close()


def _outside_mouth(img: np.ndarray) -> np.ndarray:
    return img[MOUTH[0].stop + 8 :]  # FakeRenderer draws the mouth in rows 80..104 only


async def test_two_sessions_show_their_own_avatars(engine, default_avatar):
    a = make_scheduler(None, engine.worker, engine=engine)
    b = make_scheduler(None, engine.worker, engine=engine, avatar="negative")
    assert a.avatar is default_avatar and b.avatar is engine.avatars.get("negative")
    assert engine.avatars.describe()[1] == {"name": "negative", "kind": "prepared", "loaded": True}
    own = {a: _outside_mouth(default_avatar.frame(0)), b: _outside_mouth(b.avatar.frame(0))}
    assert np.abs(own[a].astype(int) - own[b]).mean() > 50  # the two avatars differ everywhere
    out: dict = {a: [], b: []}
    for s in (a, b):
        s.start()
    try:
        await asyncio.gather(*(drive(s, 0.8, True, out[s]) for s in (a, b)))  # speech ...
        await asyncio.gather(*(drive(s, 0.6, False, out[s]) for s in (a, b)))  # ... then silence
    finally:
        await stop(a.tasks + b.tasks, engine.worker)
    for s in (a, b):
        assert s.counts["speech"] >= 5 and s.counts["rest"] >= 5, s.counts
        assert len(out[s]) >= 30
        for _, img, _, _ in out[s]:
            assert np.array_equal(_outside_mouth(img), own[s])


def test_an_unknown_avatar_fails_the_session_before_it_joins(engine):
    with pytest.raises(UnknownAvatar, match="'nobody' is not in the avatar library .*: choose one of default, "
                                            "negative"):
        make_scheduler(None, engine.worker, engine=engine, avatar="nobody")
    assert len(engine.load) == 0 and len(engine.phases) == 0

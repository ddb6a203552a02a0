"""Every message between the server and the inference process survives packing both ways: in band
(pickle through the pipe) and with its arrays in shared memory, field for field."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from realtime.inference.factory import DiffusionConfig
from realtime.inference.messages import (ChildSpec, DrawFrame, Drawn, DrawSpec, EncodeAnswer, EncodeRequest, Failed,
                                         Ready, Released, ReleaseRequest, RenderAnswer, RenderRequest, RestAnswer,
                                         RestRequest, StartFailed, avatar_key)
from realtime.inference.shm_channel import Region
from realtime.render.base import FrameEvent
from tests.fakes import FakeAvatar

rng = np.random.default_rng(0)
audio = rng.standard_normal(640).astype(np.float32)
blocks = rng.standard_normal((2, 50, 384)).astype(np.float32)
image = rng.integers(0, 255, (64, 48, 3), dtype=np.uint8)
event = FrameEvent(7, True, {"sil": 0.9, "PP": 0.1}, {"jawOpen": 0.2})
draw = DrawSpec(3, 11, (DrawFrame(0, 100, 12.5), DrawFrame(1, 101, float("inf"))), "low")
drawn_on = DrawSpec(3, 11, (DrawFrame(0, 100, 12.5),), "full", avatar="/srv/avatars/anna")

MESSAGES = [
    EncodeRequest(5, "full", audio, reset=True, light=False),
    EncodeRequest(5, "low", audio, reset=False, light=True, draw=draw),
    EncodeRequest(5, "low", audio, reset=False, light=True, draw=drawn_on),
    RenderRequest(3, "full", 11, np.array([4, 5]), blocks, "lighter", 99.25),
    RenderRequest(3, "full", 11, np.array([4, 5]), blocks, "full", 99.25, avatar="/srv/avatars/anna"),
    RestRequest("low", 2, 42),
    RestRequest("low", 2, 42, avatar="/cache/avatars/image-8828e3f97f7a12f2-256"),
    ReleaseRequest("encoder", 5),
    ReleaseRequest("render", 3),
    EncodeAnswer(((0, blocks[0]), (1, blocks[1]))),
    EncodeAnswer(((0, blocks[0]),), Drawn(((0, image, event), (1, image, None)), 0.004)),
    RenderAnswer((image, image), (event, event)),
    RestAnswer(image),
    Released(),
    Failed(LookupError("the session's encoder is not in the inference process")),
    ChildSpec(None, "diffusion", 25, -10, DiffusionConfig(unet="u.pt", vae="vae", steps=2)),
    ChildSpec("/srv/avatars/default", "embedded", 25, None, max_avatars=2),
    Ready("models loaded in 2.1 s", attached=True),
    StartFailed("FileNotFoundError: avatar"),
]


def same(a, b) -> bool:
    """Deep equality that compares arrays by value and exceptions by type and text."""
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    if isinstance(a, BaseException):
        return type(a) is type(b) and str(a) == str(b)
    if dataclasses.is_dataclass(a) and not isinstance(a, type):
        return type(a) is type(b) and all(same(getattr(a, f.name), getattr(b, f.name)) for f in dataclasses.fields(a))
    if isinstance(a, (tuple, list)):
        return type(a) is type(b) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    return a == b


@pytest.fixture(params=["in band", "shared memory"])
def region(request):
    r = Region(0) if request.param == "in band" else Region(1 << 20)
    yield r
    r.close()


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip(message, region):
    back = region.unpack(region.pack(message))
    assert type(back) is type(message) and same(back, message)


def test_the_same_check_sees_a_changed_field():
    """The round-trip check would catch a field that does not come back (a test that can fail)."""
    render = MESSAGES[3]
    changed = dataclasses.replace(render, frame_indices=np.array([4, 6]))
    assert not same(render, changed)
    assert not same(MESSAGES[0], dataclasses.replace(MESSAGES[0], reset=False))
    assert not same(render, dataclasses.replace(render, avatar="/srv/avatars/bob"))
    assert not same(draw, drawn_on) and not same(MESSAGES[1], MESSAGES[2])


def test_requests_name_their_avatar_by_its_folder(default_avatar):
    """None (the child's default) unless the request names one; ``avatar_key`` gives the folder."""
    assert RenderRequest(3, "full", 11, np.array([4]), blocks[:1]).avatar is None
    assert RestRequest("low", 2, 42).avatar is None and draw.avatar is None
    assert avatar_key(default_avatar) == str(default_avatar.directory)
    assert avatar_key(FakeAvatar()) is None  # a stand-in without a folder: the child's default


def test_messages_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        MESSAGES[0].reset = False  # type: ignore[misc]


def test_draw_spec_first_deadline():
    assert draw.first_deadline == 12.5

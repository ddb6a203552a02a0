"""Shared-memory side channel of the inference process's pipes (realtime.inference.shm_channel)."""

import numpy as np
import pytest

from realtime.inference.shm_channel import IN_BAND, SHARED, Region


@pytest.fixture
def regions():
    owner = Region(1 << 20)
    reader = Region(name=owner.name)
    yield owner, reader
    reader.close()
    owner.close()


def test_arrays_travel_through_the_region_and_come_back_as_private_copies(regions):
    owner, reader = regions
    frames = [np.arange(512 * 300 * 3, dtype=np.uint8).reshape(512, 300, 3), np.full((7, 5), 2.5, np.float32)]
    msg = owner.pack(("ok", (frames, [{"event": 1}])))
    assert msg[:1] == SHARED and len(msg) < 1000  # only the small pickle goes through the pipe
    status, (got, events) = reader.unpack(msg)
    assert status == "ok" and events == [{"event": 1}]
    for a, b in zip(frames, got):
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b) and b.flags.writeable
    owner.pack(("ok", [np.zeros((512, 300, 3), np.uint8)]))  # the region is reused by the next message
    assert np.array_equal(got[0], frames[0])  # the copy does not change with it


def test_too_large_or_without_shared_memory_goes_through_the_pipe(regions):
    owner, reader = regions
    big = np.ones((1 << 20) + 1, np.uint8)
    msg = owner.pack(big)
    assert msg[:1] == IN_BAND and len(msg) > big.nbytes
    assert np.array_equal(reader.unpack(msg), big)
    none = Region(0)
    assert none.shm is None and none.name is None
    msg = none.pack({"a": np.arange(3)})
    assert msg[:1] == IN_BAND and np.array_equal(none.unpack(msg)["a"], np.arange(3))
    none.close()


def test_non_contiguous_arrays_and_exceptions_survive(regions):
    owner, reader = regions
    view = np.arange(100, dtype=np.int16).reshape(10, 10)[:, ::2]
    status, (v, err) = reader.unpack(owner.pack(("error", (view, ValueError("bad audio")))))
    assert np.array_equal(v, view) and isinstance(err, ValueError) and str(err) == "bad audio"


def test_a_region_that_cannot_be_attached_is_no_region():
    r = Region(name="syncvid-no-such-region")
    assert r.shm is None and r.pack([np.ones(3)])[:1] == IN_BAND
    r.close()

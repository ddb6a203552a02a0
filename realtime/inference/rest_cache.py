"""Rest frames shared by every session (used on the inference worker's threads, or in the
inference process)."""

from __future__ import annotations

import threading
from collections import OrderedDict

from realtime.render.base import AvatarFrames, Renderer

MAX_REST_STATES = 64  # idle-motion states of the rest frames, one per (renderer, seed) in use


class RestFrameCache:
    """Rest frames by (renderer, seed, avatar index), shared by all sessions: sessions index the
    avatar by time since the engine's epoch, so N silent sessions cost one rest render per slot.
    Used from the inference worker thread(s)."""

    def __init__(self, max_items: int = 48) -> None:
        self.max_items = max_items
        self._lock = threading.Lock()  # the worker may run several threads
        self._frames: OrderedDict = OrderedDict()
        self._states: OrderedDict = OrderedDict()  # (renderer, seed) -> state; the seeds in use, bounded
        self.hits = self.misses = 0

    def get(self, renderer: Renderer, avatar: AvatarFrames, index: int, seed: int):
        with self._lock:  # one render per key even when two sessions ask at once
            return self._get(renderer, avatar, index, seed)

    def _get(self, renderer: Renderer, avatar: AvatarFrames, index: int, seed: int):
        key = (id(renderer), id(avatar), seed, index)
        entry = self._frames.get(key)
        if entry is not None and entry[0] is avatar:  # the avatar is kept with its frames: its id is never reused
            self.hits += 1
            return entry[1]
        self.misses += 1
        skey = (id(renderer), seed)
        if skey not in self._states:
            self._states[skey] = renderer.new_state(seed)
            while len(self._states) > MAX_REST_STATES:  # clients choose seeds: cycling them costs no memory
                self._states.popitem(last=False)
        self._states.move_to_end(skey)
        frame = renderer.rest_frame(avatar, index, self._states[skey])
        self._frames[key] = (avatar, frame)
        while len(self._frames) > self.max_items:
            self._frames.popitem(last=False)
        return frame

"""A session's frames between the encoder and the output: feature blocks by input frame, frames
rendered ahead of their slot, rest frames. Every buffer is bounded; ``clear()`` empties them at once.

Only the event loop touches these (workers return results; the loop stores them)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from realtime.metrics import ServerMetrics
from realtime.render.base import FrameEvent

HANGOVER = 2  # silent frames still rendered after speech so the mouth closes smoothly
NEVER = -(10**9)  # an input frame or slot index before any


@dataclass
class Block:
    block: np.ndarray  # the frame's audio features, (50, 384) float32
    silent: bool  # nothing to render: a rest frame shows (silence past the hangover)
    arrival: float  # arrival time of the packet holding the sample this frame shows


@dataclass
class ReadyFrame:
    """A frame rendered from speech, waiting for its slot."""

    image: np.ndarray
    event: FrameEvent | None
    arrival: float  # of the packet it shows (its engine latency is measured from here)


class SessionFrames:
    def __init__(self, max_frames_ahead: int, metrics: ServerMetrics) -> None:
        self.max_frames_ahead, self.metrics = max_frames_ahead, metrics
        self.gen = 0  # bumped on interrupt and grid moves; results of older generations are dropped
        self.blocks: dict[int, Block] = {}  # input frame -> its features
        self.ready: dict[int, ReadyFrame] = {}  # slot -> frame rendered from speech
        self.rest: dict[int, np.ndarray] = {}  # slot -> rest frame
        self.thinned: set[int] = set()  # input frames skipped on purpose at the top level (repeated)
        self.rendered_upto = NEVER  # highest input frame handed to the renderer
        self.sent_slot = NEVER  # newest slot handed to the output: never rendered again
        self.last_speech_i = NEVER  # newest input frame with speech
        self.last_speech_t = -1e9  # when it was added (monotonic)

    def add_block(self, i: int, block: np.ndarray, silent: bool, arrival: float) -> None:
        if not silent:
            self.last_speech_i = i
            self.last_speech_t = time.monotonic()
        # a short hangover keeps rendering just after speech so the renderer can close the mouth
        skip = silent and i - self.last_speech_i > HANGOVER
        self.blocks[i] = Block(block, skip, arrival)
        if len(self.blocks) > 4 * self.max_frames_ahead:  # bounded even if nothing consumes them
            for k in sorted(self.blocks)[: len(self.blocks) - 4 * self.max_frames_ahead]:
                del self.blocks[k]

    def make_ready(self, slot: int, frame: ReadyFrame, slack: float) -> None:
        """A rendered speech frame waits for its slot (``slack``: seconds until it departs)."""
        self.ready[slot] = frame
        self.metrics.frame_slack.observe(slack)

    def clear(self) -> int:
        """Drops every pending block and frame (interrupt); returns how many speech frames that was."""
        dropped = len(self.ready) + sum(1 for b in self.blocks.values() if not b.silent)
        self.gen += 1
        self.ready.clear()
        self.blocks.clear()
        self.thinned.clear()
        self.last_speech_i = NEVER
        return dropped

    def forget_before(self, slot: int, frame: int | None) -> None:
        """Slot ``slot`` is leaving: what was for earlier slots (input frames before ``frame - 2``)
        can never be shown."""
        self.sent_slot = max(self.sent_slot, slot)
        for s in [s for s in self.ready if s < slot]:
            self.metrics.frames_dropped.inc()
            del self.ready[s]
        for s in [s for s in self.rest if s < slot]:
            del self.rest[s]
        for k in [k for k in self.blocks if frame is None or k < frame - 2]:
            del self.blocks[k]
        self.thinned = {k for k in self.thinned if frame is not None and k >= frame}

    def speech_pending(self) -> bool:
        return bool(self.ready)

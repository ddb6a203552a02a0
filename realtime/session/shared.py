"""What every session shares: the avatars (the default one and the library sessions choose from),
one renderer per look-ahead setting, the encoder factory, the inference worker, the shared rest
frames, where each session's slots fall (``SlotPhases``) and whether the server is lightly loaded
(``LoadWatch``). Models are loaded once per process and only ever used from the worker."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from realtime.face.library import AvatarLibrary
from realtime.inference.rest_cache import RestFrameCache
from realtime.inference.worker import InferenceWorker
from realtime.render.base import AvatarFrames, Renderer
from realtime.session.config import StreamEncoder

if TYPE_CHECKING:  # the inference process's parent side; imported by whoever builds one
    from realtime.inference.process import ProcessBackend


class Releasable(Protocol):
    def release(self) -> None: ...

log = logging.getLogger(__name__)


class SlotPhases:
    """Where each session's video slots fall within a frame period (seconds of the monotonic clock,
    modulo the period). A session's slot grid can sit at any audio packet boundary of its frame
    period with the same latency (timeline.TimeGrid._set_anchor); it takes the one with the least load from
    the others', so sessions whose packets arrive in step (clients started together, one sender of
    many streams) do not all need the inference process at the same moment. Event loop only."""

    def __init__(self) -> None:
        self._phases: dict[int, float] = {}

    def choose(self, key: int, candidates: list[float], period: float) -> int:
        """Index of the least loaded of ``candidates`` (phases); it becomes ``key``'s phase."""
        others = [p for k, p in self._phases.items() if k != key]

        def load(c: float) -> float:  # each other session weighs up to half a period away
            d = [abs(c - p) % period for p in others]
            return sum(max(0.0, period / 2 - min(x, period - x)) for x in d)

        best = min(range(len(candidates)), key=lambda m: (round(load(candidates[m]), 9), m))
        self._phases[key] = candidates[best] % period
        return best

    def release(self, key: int) -> None:
        self._phases.pop(key, None)

    def __len__(self) -> int:
        return len(self._phases)


LATE_HOLD_S = 10.0  # after a late frame in any session, none aims under its budget for this long


class LoadWatch:
    """Whether the server is lightly loaded, for sessions that aim under their latency budget then.

    A frame's compute time is what its budget leaves after the look-ahead: 42 ms at the defaults,
    sized for the most sessions the inference process serves. With few sessions it answers in a
    fraction of that, so a session may aim ``light_load_cut_ms`` under its budget while at most
    ``light_load_sessions`` sessions are open and no session had a late frame in the last
    LATE_HOLD_S (measured on 2 cores, 20 ms under the default budget: 0 / 0.13 / 3.3 / 13-19 % late
    frames at 1 / 2 / 3 / 4 sessions). Sessions move between the two targets only in silence
    (timeline.TimeGrid.observe). Event loop only."""

    def __init__(self) -> None:
        self._sessions: set[int] = set()
        self._last_late = -math.inf

    def join(self, key: int) -> None:
        self._sessions.add(key)

    def release(self, key: int) -> None:
        self._sessions.discard(key)

    def late(self, now: float) -> None:
        self._last_late = now

    def light(self, now: float, max_sessions: int) -> bool:
        return len(self._sessions) <= max_sessions and now - self._last_late > LATE_HOLD_S

    def __len__(self) -> int:
        return len(self._sessions)


@dataclass
class Engine:
    avatar: AvatarFrames  # the default avatar (``avatars.get("default")``)
    renderer_factory: Callable[[str], Renderer]  # lookahead -> Renderer (cached below)
    encoder_factory: Callable[[str, int], StreamEncoder]  # (lookahead, fps) -> a new per-session encoder
    worker: InferenceWorker
    epoch: float = field(default_factory=time.monotonic)  # avatar frame 0 (see RestFrameCache)
    rest_cache: RestFrameCache = field(default_factory=RestFrameCache)
    phases: SlotPhases = field(default_factory=SlotPhases)
    load: LoadWatch = field(default_factory=LoadWatch)
    backend: ProcessBackend | None = None  # when the models run in the inference process
    # the avatars sessions choose from by name (SessionConfig.avatar); None: ``avatar`` alone
    avatars: AvatarLibrary = None  # type: ignore[assignment]  # set in __post_init__
    _renderers: dict[str, Renderer] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.avatars is None:
            self.avatars = AvatarLibrary(None, self.avatar)  # type: ignore[arg-type]  # stand-ins in tests

    def renderer(self, lookahead: str) -> Renderer:
        if lookahead not in self._renderers:
            self._renderers[lookahead] = self.renderer_factory(lookahead)
        return self._renderers[lookahead]

    def warm_up(self, lookaheads: tuple[str, ...], fps: int) -> None:
        """Loads every model now (seconds), so no session start ever loads one on the event loop."""
        t = time.monotonic()
        for la in lookaheads:
            self.encoder_factory(la, fps)
            r = self.renderer(la)
            r.warm_up(self.avatar)
        if self.backend is None:  # in process mode the child logs its own load time
            log.info("models loaded in %.1f s", time.monotonic() - t)

    def release(self, *objs: Releasable) -> None:
        """Frees a closed session's model-side state (encoder, renderer state) where it lives
        elsewhere (the inference process); fire and forget, off the event loop."""
        for obj in objs:
            try:
                self.worker.submit(obj.release, kind="release")
            except Exception:  # worker closed or full: the child's LRU bound reclaims it
                pass

    def close(self) -> None:
        self.worker.close()
        if self.backend is not None:
            self.backend.close()

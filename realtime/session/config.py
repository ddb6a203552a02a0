"""One session's settings, from the server's config and the client's options."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from realtime.visemes.windows import WINDOWS

if TYPE_CHECKING:  # the server's config; read here, never imported at run time (no circle)
    from realtime.server.config import RealtimeConfig

# Future audio each look-ahead setting needs: LatentSync's block ends 6 encoder steps (120 ms)
# past the frame centre; the low-latency viseme model is trained for at most 40 ms.
LOOKAHEAD_S = {name: w.lookahead_ms / 1000.0 for name, w in WINDOWS.items()}


@dataclass(frozen=True)
class SessionConfig:
    fps: int = 25
    lookahead: str = "full"  # "full" (120 ms of future audio) | "low" (40 ms)
    budget_s: float = 0.170  # speech sample arrival -> departure of the frame showing it
    max_chunk: int = 4  # frames per renderer call at most (fewer when late)
    silence_dbfs: float = -45.0  # below this a frame's audio window is silence: a rest frame
    max_frames_ahead: int = 16  # rendered-but-not-sent frames
    audio_buffer_s: float = 4.0  # input audio rings; older audio is overwritten, never queued
    audio_extra_delay_s: float = 0.0  # added to the outgoing audio's delay (receiver-side A/V trim)
    light_cut_s: float = 0.0  # aimed under the budget while the server is lightly loaded (LoadWatch)
    light_sessions: int = 0  # "lightly loaded": at most this many sessions
    seed: int = 0
    avatar: str = "default"  # a name of the engine's avatar library (Engine.avatars)

    @property
    def lookahead_s(self) -> float:
        return LOOKAHEAD_S[self.lookahead]

    @property
    def period(self) -> float:
        return 1.0 / self.fps

    @cached_property  # read per packet and per frame: computed once
    def silence_rms(self) -> float:
        return 10 ** (self.silence_dbfs / 20.0)

    @classmethod
    def from_realtime(cls, config: RealtimeConfig, low_latency: bool = False, seed: int = 0,
                      avatar: str = "default") -> SessionConfig:
        """A session of the server configured by ``config``; ``low_latency``: the client asked for it
        (the server's ``lookahead: low`` makes every session low-latency); ``avatar``: the name of
        the avatar it chose."""
        lookahead = "low" if low_latency or config.lookahead == "low" else "full"
        budget_ms = config.low_latency_budget_ms if lookahead == "low" else config.latency_budget_ms
        return cls(fps=config.fps, lookahead=lookahead, budget_s=budget_ms / 1000.0, max_chunk=config.max_chunk,
                   silence_dbfs=config.silence_dbfs, max_frames_ahead=config.limits.max_frames_ahead,
                   audio_buffer_s=config.limits.audio_buffer_s,
                   audio_extra_delay_s=config.audio_extra_delay_ms / 1000.0,
                   light_cut_s=config.light_load_cut_ms / 1000.0, light_sessions=config.light_load_sessions,
                   seed=seed, avatar=avatar)

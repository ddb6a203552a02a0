"""The two look-ahead settings of the viseme model, defined once for the model, its training
data, the renderer and the server.

Whisper's encoder emits 50 steps per second (20 ms each). For video frame ``i`` at ``fps`` the
centre step is ``c = int(i * 50 / fps)`` (LatentSync's rule) and a window takes steps
``[c - past, c + future)``. Step ``k`` covers audio ``[20k, 20k + 20)`` ms, so the frame needs
audio up to ``20 * (c + future)`` ms, i.e. ``20 * future`` ms after the frame starts. On top of
that the log-mel STFT window and the encoder's two 3-tap convolutions reach 12.5 ms further
(``RECEPTIVE_FIELD_MS``) in both settings.
"""

from __future__ import annotations

from dataclasses import dataclass

from realtime.audio.features import STEP_MS, STEPS_PER_SECOND  # 50 steps/s, 20 ms each
# mel frame m is centred at 10m ms with a 25 ms window; conv1 and conv2 (k=3) make step k read
# mel frames 2k-2..2k+2, so the last sample step k needs is at 20k + 20 + 12.5 ms.
RECEPTIVE_FIELD_MS = 12.5
NUM_TAPS = 5  # conv front-end + 4 encoder blocks of Whisper tiny (LatentSync's taps)


@dataclass(frozen=True)
class LookaheadWindow:
    """Steps ``[c - past, c + future)`` around a frame's centre step ``c``."""

    name: str
    past: int
    future: int

    @property
    def steps(self) -> int:
        return self.past + self.future

    @property
    def lookahead_ms(self) -> float:
        """Audio needed after the frame's start, LatentSync's convention (120 ms for its window)."""
        return float(self.future * STEP_MS)

    @property
    def rows(self) -> int:
        """Rows of the flattened per-frame block (step-major, tap-minor), 50 for LatentSync."""
        return self.steps * NUM_TAPS

    def centre_step(self, frame: int, fps: float = 25.0) -> int:
        return int(frame * STEPS_PER_SECOND / fps)

    def step_range(self, frame: int, fps: float = 25.0) -> tuple[int, int]:
        """[start, stop) encoder steps of ``frame`` (unclamped; callers clamp to the audio)."""
        c = self.centre_step(frame, fps)
        return c - self.past, c + self.future


# LatentSync's per-frame block: [c-4, c+6) -> 120 ms of future audio.
FULL = LookaheadWindow("full", past=4, future=6)
# Low-latency mode: same width, shifted into the past -> 40 ms of future audio.
LOW = LookaheadWindow("low", past=8, future=2)

WINDOWS = {w.name: w for w in (FULL, LOW)}


def get_window(name: str) -> LookaheadWindow:
    try:
        return WINDOWS[name]
    except KeyError:
        raise ValueError(f"unknown look-ahead window {name!r}; use one of {sorted(WINDOWS)}") from None

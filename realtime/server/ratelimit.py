"""A token bucket: what the server allows a client per second, with bursts (incoming audio
packets in webrtc/receive.py, control messages in protocol.py)."""

from __future__ import annotations

import time


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved up; starts full. ``take()`` spends one
    token and says whether there was one."""

    def __init__(self, rate: float, burst: float, clock=time.monotonic) -> None:
        self.rate, self.burst, self._clock = float(rate), float(burst), clock
        self._tokens, self._t = float(burst), None

    def take(self) -> bool:
        now = self._clock()
        if self._t is not None:
            self._tokens = min(self.burst, self._tokens + (now - self._t) * self.rate)
        self._t = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True

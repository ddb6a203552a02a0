"""Stand-ins for the diffusion renderer's tests: a per-frame tiny UNet and a tiny in-memory avatar.

The stand-in UNet has the real UNet's call signature (sample (B, 13, F, h, w), timestep,
encoder_hidden_states (B, F, 50, 384)) and treats every frame independently, like LatentSync's
v1.0 UNet (no motion modules), so any chunking must reproduce the same frames.
"""

from __future__ import annotations

import numpy as np
import torch
from einops import rearrange


class PerFrameUNet(torch.nn.Module):
    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = torch.nn.Conv2d(13, 4, 3, padding=1)
        self.audio = torch.nn.Linear(384, 4)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
        self.calls: list[dict] = []

    def forward(self, sample, timestep, encoder_hidden_states=None):
        b, _, f, h, w = sample.shape
        self.calls.append({"shape": tuple(sample.shape), "audio": encoder_hidden_states.detach().clone(),
                           "t": int(timestep)})
        x = rearrange(sample, "b c f h w -> (b f) c h w")
        y = self.conv(x) * (1.0 + float(timestep) / 1000.0)
        a = self.audio(rearrange(encoder_hidden_states, "b f s d -> (b f) s d").mean(1))  # (BF, 4)
        y = y + a[:, :, None, None]
        return rearrange(torch.tanh(y), "(b f) c h w -> b c f h w", b=b)


class TinyAvatar:
    """Ping-pong avatar of T synthetic frames; crops are the central R x R square of each frame."""

    def __init__(self, frames: int = 5, resolution: int = 64, frame_hw=(80, 96), no_face=(), seed: int = 0):
        rng = np.random.default_rng(seed)
        self.resolution = resolution
        self._frames = rng.integers(0, 256, size=(frames, *frame_hw, 3), dtype=np.uint8)
        self.no_face = set(no_face)
        self.mask = None  # renderer falls back to LatentSync's mask at R
        self.y0 = (frame_hw[0] - resolution) // 2
        self.x0 = (frame_hw[1] - resolution) // 2

    def __len__(self):
        return len(self._frames)

    def _src(self, i: int) -> int:
        n = len(self._frames)
        if n == 1:
            return 0
        period = 2 * n
        k = i % period
        return k if k < n else period - 1 - k

    def frame(self, i):
        return self._frames[self._src(i)].copy()

    def has_face(self, i):
        return i not in self.no_face

    def crop(self, i):
        f = self._frames[self._src(i)]
        return f[self.y0:self.y0 + self.resolution, self.x0:self.x0 + self.resolution].copy()

    def paste_back(self, i, crop):
        out = self.frame(i)
        out[self.y0:self.y0 + self.resolution, self.x0:self.x0 + self.resolution] = crop
        return out


def audio_blocks(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, 50, 384)).astype(np.float32)

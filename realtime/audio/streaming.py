"""Streaming Whisper encoder with a rolling cache: live 16 kHz audio in, LatentSync-style per-frame
(10 * 5, 384) feature blocks out, each as soon as the audio it needs has arrived.

Design (details and measurements in docs/audio_streaming.md):

- **Positions.** Offline features (``realtime.audio.features``) come from 30 s windows at positions
  0..1499, and depend strongly on absolute position. The stream is cut into the same windows: a
  step's position is its index modulo ``n_ctx`` and every cache restarts at a window boundary. So
  a stream of any length is encoded exactly where LatentSync encodes the same audio, and nothing
  grows past one window.
- **Settled cache.** Each encoder call runs the "unsettled" steps, those less than
  ``settle_steps`` behind the newest step, plus the new ones, through all blocks. Their queries
  attend to the cached keys/values of all settled steps of the window, to each other, and to a
  virtual future (below). Steps that fall ``settle_steps`` behind are settled: their keys, values
  and taps are frozen. Every step is encoded at most ``settle_steps / hop + 1`` times.
- **Virtual future.** Offline, a step attends to the rest of its 30 s window, which for a short
  clip is mostly 0.0 log-mel padding, and that padding carries much of the attention. Streaming
  stands in for the unknown future with the keys/values the padding has at those positions when
  the window is all padding (computed once per model): it is what the offline encoder sees after
  the end of a clip, costs only attention, and lifts fidelity above even re-encoding all audio so
  far (arctic_a0007: 0.92 against 0.90 mean frame cosine at 120 ms look-ahead).
- **Schedule.** Calls happen at fixed stream positions (when frame ``i`` with
  ``(i + 1) % hop_frames == 0`` has its audio), never at push boundaries, so any chunking of the
  same audio gives bit-identical features.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from realtime.audio.features import STEP_MS, STEPS_PER_SECOND, frame_center_step, num_steps, num_video_frames
from realtime.audio.io import SAMPLE_RATE
from realtime.audio.streaming_calls import Plan, advance_all
from realtime.audio.streaming_front import StreamingFrontEnd
from realtime.audio.streaming_weights import StreamingWeights
from realtime.errors import AudioInputError

log = logging.getLogger(__name__)

# Steps re-encoded behind the newest one (plus the extra look-ahead): 8 measured best per cost
# (4: -0.02 mean cosine, 16: +0.001 for 1.6x the steps per call).
DEFAULT_SETTLE_STEPS = 8
# Keys attended per call: settled context + unsettled + virtual future. Attention over ~700 fp32
# keys was ~30 % of a call and reading them evicts the weights; 300 + 100 (6 s + 2 s) instead of
# 500 + 200 cut the whole stream's CPU ~13 % for -0.004 mean cosine on short clips and -0.009 on
# the 35 s clip (measured 2026-11-23, docs/audio_streaming.md).
DEFAULT_VIRTUAL_FUTURE_STEPS = 100
DEFAULT_MAX_CONTEXT_STEPS = 300


@dataclass(frozen=True)
class FrameFeatures:
    """One video frame's audio block.

    ``features``: (steps * taps, C) float32, steps ``[c - past, c + future)`` around the frame's
    centre step ``c = int(index * 50 / fps)`` (clamped to the audio), index-major, tap-minor:
    (50, 384) for Whisper tiny with the default block. ``needed_samples``: stream samples (since
    the last reset) the block needs, extra look-ahead included; the frame could not exist earlier.
    ``emitted_samples``: samples pushed when it was emitted (equal to ``needed_samples`` when the
    chunk boundary falls right there; larger by the rest of the chunk, or by waiting for the hop).
    """

    index: int
    features: Tensor
    needed_samples: int
    emitted_samples: int

    @property
    def available_s(self) -> float:
        """Stream time (s since the last reset) at which the frame's audio had all arrived."""
        return self.needed_samples / SAMPLE_RATE


class StreamingAudioEncoder:
    """Per-stream encoder state. Not thread-safe; one instance per audio stream.

    ``model``: an openai-whisper ``Whisper`` or ``AudioEncoder``, or a shared ``StreamingWeights``.
    ``fps``: video frame rate. ``extra_lookahead_ms``: wait this much more audio (rounded up to
    20 ms steps) before emitting a frame; buys fidelity for latency. ``block=(past, future)``:
    steps before / from the centre step (LatentSync: (4, 6), 120 ms look-ahead).
    ``hop_frames``: frames per encoder call (1 = lowest delay; 2 halves the calls and delays every
    other frame by one frame time). ``settle_steps``: how long a step is re-encoded as audio
    arrives (default 8 + the extra look-ahead in steps). ``virtual_future_steps``: padding
    positions after the newest step that queries attend to (default 100 = 2 s; 200 adds ~0.004
    mean cosine). ``max_context_steps``: settled steps attended to (default 300 = 6 s: keeps the
    cost of a call constant through the window; 500 adds ~0.009 mean cosine on long speech, None
    attends to the whole window as offline).
    ``dtype``: None picks bfloat16 where the CPU computes it natively, else float32.
    ``catch_up``: when one push brings audio for several hops (a stream restarting with some
    context, packets arriving in a bunch), encode up to the newest in one call instead of one call
    per hop (a restart with 0.26 s: 1 call instead of 4, ~13 -> ~4.5 ms). Frames then no longer
    depend only on the audio but on how it was chunked: those steps settle after seeing more
    future audio (measured: mean cosine to the offline features unchanged or higher).

    Run it single-threaded (``torch.set_num_threads(1)`` or one worker thread per core): the
    matrices are a few rows tall and intra-op threads only spin (20x the CPU on a loaded machine).
    """

    def __init__(
        self,
        model,
        fps: float = 25,
        extra_lookahead_ms: float = 0,
        block: tuple[int, int] = (4, 6),
        hop_frames: int = 1,
        settle_steps: int | None = None,
        virtual_future_steps: int = DEFAULT_VIRTUAL_FUTURE_STEPS,
        max_context_steps: int | None = DEFAULT_MAX_CONTEXT_STEPS,
        dtype: torch.dtype | None = None,
        catch_up: bool = False,
    ):
        past, future = block
        if past < 0 or future < 1:
            raise ValueError(f"block=(past, future) needs past >= 0 and future >= 1, got {block}")
        if fps <= 0 or hop_frames < 1 or (settle_steps is not None and settle_steps < 0) or extra_lookahead_ms < 0:
            raise ValueError("fps and hop_frames must be positive; settle_steps and extra_lookahead_ms non-negative")
        self.weights = model if isinstance(model, StreamingWeights) else StreamingWeights(model, dtype)
        self.fps = float(fps)
        self.past, self.future = int(past), int(future)
        self.extra_steps = math.ceil(extra_lookahead_ms / STEP_MS)
        self.hop_frames = int(hop_frames)
        # A block's oldest step is future + past - 1 + extra steps behind the newest when the frame
        # is emitted; steps keep being re-encoded for 8 + extra steps so the extra look-ahead
        # reaches the whole block (measured: +500 ms gives 0.971 instead of 0.950 with 8).
        self.settle_steps = int(settle_steps) if settle_steps is not None else DEFAULT_SETTLE_STEPS + self.extra_steps
        self._full_settle = self.settle_steps
        self.virtual_future_steps = int(virtual_future_steps)
        self.max_context_steps = max_context_steps
        self.catch_up = bool(catch_up)
        w = self.weights
        self.front = StreamingFrontEnd(w)
        # The rolling caches are allocated once (fixed shapes: memory does not depend on stream length).
        self.cache_k = torch.empty_like(w.pad_k)  # (n_layer, n_ctx, C), one row per window position
        self.cache_v = torch.empty_like(w.pad_v)
        steps_per_hop = math.ceil(self.hop_frames * STEPS_PER_SECOND / self.fps)
        self.ring_size = self.past + self.future + self.extra_steps + self.settle_steps + 2 * steps_per_hop + 8
        self.taps = torch.zeros(self.ring_size, w.n_taps, w.width)
        self.encoder_calls = 0  # statistics since construction (kept across resets)
        self.steps_encoded = 0
        self.reset()

    # ---- public API ----------------------------------------------------------------------------
    @property
    def lookahead_ms(self) -> float:
        """Nominal audio look-ahead of a frame: its future steps plus the extra look-ahead."""
        return (self.future + self.extra_steps) * STEP_MS

    @property
    def light(self) -> bool:
        """Cheaper calls for an overloaded server: steps settle after half as many re-encodings
        (``settle_steps`` halved: 4.9 -> 2.9 encodings per step, ~15 % less CPU at 40 ms pushes,
        mean cosine -0.015). Can be switched between any two pushes."""
        return self.settle_steps < self._full_settle

    @light.setter
    def light(self, on: bool) -> None:
        self.settle_steps = self._full_settle // 2 if on else self._full_settle

    def release(self) -> None:
        """Nothing to free elsewhere: this encoder's state is in this process (session.config.StreamEncoder)."""

    def reset(self) -> None:
        """Drop all pending audio and state; the timeline restarts (next frame is frame 0 and the
        next sample sits at position 0 of a new 30 s window, as a new utterance offline)."""
        self.front.reset()
        self._start_window()  # n_settled: settled steps of the current window (rows of cache_k/v)
        self.window_x = torch.zeros(0, self.weights.width, dtype=self.weights.dtype)  # unsettled inputs
        self.start = 0  # global index of the first unsettled step
        self.frontier = -1  # newest encoded global step
        self.next_frame = 0
        self.samples_pushed = 0
        self.total_steps = None  # known after flush()
        self.total_frames = None

    def push(self, samples) -> list[FrameFeatures]:
        """Append 16 kHz mono float samples (any length); returns the frames that became ready."""
        self._add(self._check(samples))
        return self._advance()

    def flush(self) -> list[FrameFeatures]:
        """End of utterance: emit every remaining frame of the audio pushed (the end padded as the
        offline features pad it), then ``reset()``. Frame count as offline: floor(duration * fps)."""
        n = self.samples_pushed
        frames: list[FrameFeatures] = []
        if n:
            self.front.finish()
            self.total_steps = num_steps(n)
            self.total_frames = num_video_frames(n, self.fps)
            frames = self._advance()
        self.reset()
        return frames

    def state_nbytes(self) -> int:
        """Bytes held by this stream's buffers (excluding the shared weights)."""
        tensors = [self.cache_k, self.cache_v, self.taps, self.window_x, self.front.audio, self.front.mel_buf, self.front.c1_buf]
        return sum(t.numel() * t.element_size() for t in tensors)

    # ---- internals -----------------------------------------------------------------------------
    def _check(self, samples) -> Tensor:
        arr = samples.detach().cpu().numpy() if isinstance(samples, Tensor) else np.asarray(samples)
        if arr.ndim != 1:
            raise AudioInputError(f"streamed audio must be 1-D mono 16 kHz samples, got shape {arr.shape}; downmix and resample first")
        if arr.dtype.kind in "iu":
            raise AudioInputError("streamed audio must be float samples in [-1, 1], got integers; divide PCM16 by 32768")
        arr = arr.astype(np.float32, copy=False)
        if not np.isfinite(arr).all():
            raise AudioInputError("streamed audio contains NaN or infinite samples; drop or repair that chunk")
        return torch.from_numpy(np.ascontiguousarray(arr))

    def _need_step(self, i: int) -> int:
        """Newest global step frame ``i`` waits for (clamped to the audio after flush)."""
        s = frame_center_step(i, self.fps) + self.future - 1 + self.extra_steps
        return s if self.total_steps is None else min(s, self.total_steps - 1)

    def needed_samples(self, i: int) -> int:
        """Real samples frame ``i`` needs before it can be emitted (since the last reset)."""
        n = self.front.samples_for_mel(self.front.mel_needed(self._need_step(i)) - 1)
        return n if self.total_steps is None else min(n, self.samples_pushed)

    def _add(self, x: Tensor) -> None:
        if x.numel():
            self.front.add(x)
            self.samples_pushed += x.numel()

    def _advance(self) -> list[FrameFeatures]:
        out = advance_all([self])[0]
        if isinstance(out, Exception):
            raise out
        return out

    def _emit_ready(self) -> list[FrameFeatures]:
        out = []
        while self._frame_ready(self.next_frame):
            out.append(self._emit(self.next_frame))
            self.next_frame += 1
        return out

    def _next_target(self) -> int | None:
        """Newest step the next encoder call should reach, or None when the audio is not there yet."""
        if self.total_frames is not None and self.next_frame >= self.total_frames:
            return None
        last = (self.next_frame // self.hop_frames + 1) * self.hop_frames - 1
        if self.total_frames is not None:
            last = min(last, self.total_frames - 1)
        window_end = (self.frontier + 1) // self.weights.n_ctx * self.weights.n_ctx + self.weights.n_ctx - 1
        target = min(self._need_step(last), window_end)
        if self.front.mel_available() < self.front.mel_needed(target):
            return None
        # Catch-up reaches no further than the taps ring holds: the call's steps (from the first
        # unsettled one) and the block of the oldest frame not yet emitted must all fit in it; a
        # longer backlog takes several calls (each followed by the frames it completes).
        oldest = frame_center_step(self.next_frame, self.fps) - self.past
        limit = min(self.start, oldest) + self.ring_size - 1
        while self.catch_up and target < window_end:  # the newest hop whose audio is here, in this call
            last += self.hop_frames
            if self.total_frames is not None and last >= self.total_frames:
                break
            nxt = min(self._need_step(last), window_end)
            if nxt > limit or self.front.mel_available() < self.front.mel_needed(nxt):
                break
            target = nxt
        return target

    def _frame_ready(self, i: int) -> bool:
        if self.total_frames is not None and i >= self.total_frames:
            return False
        if self.total_steps is not None and self.total_steps == 0:
            return False
        return self._need_step(i) <= self.frontier

    def _emit(self, i: int) -> FrameFeatures:
        c = frame_center_step(i, self.fps)
        hi = self.frontier if self.total_steps is None else self.total_steps - 1
        idx = np.clip(np.arange(c - self.past, c + self.future), 0, hi)
        assert idx.min() > self.frontier - self.ring_size, "taps ring too small for this block"
        pos = idx % self.ring_size
        if pos[-1] - pos[0] == len(pos) - 1:  # contiguous in the ring: a slice (advanced indexing costs ~0.5 ms)
            block = self.taps[pos[0] : pos[-1] + 1].clone()
        else:
            block = self.taps.index_select(0, torch.from_numpy(pos))  # (steps, taps, C)
        return FrameFeatures(i, block.reshape(-1, block.shape[-1]), self.needed_samples(i), self.samples_pushed)

    @torch.inference_mode()
    def _plan(self, target: int) -> Plan:
        """The next encoder call: global steps up to ``target`` (inside the current window).

        ``cache_k/v`` rows are window positions: settled steps below ``n_settled``, the steps
        encoded now right after them, and the all-padding keys/values beyond (the virtual future),
        so attention reads one contiguous slice and settling is only moving ``n_settled``.
        """
        n_ctx = self.weights.n_ctx
        x = torch.cat([self.window_x, self.front.produce(target + 1)])  # (N, C): unsettled + new steps
        w0 = self.start // n_ctx * n_ctx  # the window's first global step
        lo, local_end = self.start - w0, target - w0 + 1
        assert lo == self.n_settled
        ctx_lo = 0 if self.max_context_steps is None else max(0, lo - self.max_context_steps)
        last = local_end == n_ctx or (self.total_steps is not None and target == self.total_steps - 1)
        return Plan(self, target, x, lo, local_end, ctx_lo, min(n_ctx, local_end + self.virtual_future_steps), last)

    def _commit(self, plan: Plan, taps: Tensor) -> None:
        """Store an encoded call's taps and settle the steps that fell far enough behind."""
        N = taps.shape[0]
        self._store_taps(self.start, taps)
        self.encoder_calls += 1
        self.steps_encoded += N
        n_settle = N if plan.last_of_window else max(0, N - self.settle_steps)
        self.n_settled += n_settle
        self.window_x = taps[n_settle:, 0].to(self.weights.dtype)
        self.start += n_settle
        self.frontier = plan.target
        if plan.local_end == self.weights.n_ctx:  # next window: positions restart at 0
            self._start_window()

    def _start_window(self) -> None:
        self.n_settled = 0
        self.cache_k.copy_(self.weights.pad_k)
        self.cache_v.copy_(self.weights.pad_v)

    def _store_taps(self, first_step: int, taps: Tensor) -> None:
        """Write taps of consecutive steps into the ring (two slices where it wraps)."""
        R = self.ring_size
        a = first_step % R
        n1 = min(taps.shape[0], R - a)
        self.taps[a : a + n1] = taps[:n1]
        if n1 < taps.shape[0]:
            self.taps[: taps.shape[0] - n1] = taps[n1:]


def push_many(items: list[tuple[StreamingAudioEncoder, object]]) -> list[list[FrameFeatures] | Exception]:
    """``encoder.push(samples)`` for several streams sharing one ``StreamingWeights``, with their
    encoder calls batched (``streaming_calls.encode_plans``). Same frames as pushing each alone (to bf16 rounding
    of the batched matmuls). A stream whose samples are bad gets its ``AudioInputError`` in its
    slot of the result, and a stream whose encoder call fails that exception; the others are
    unaffected."""
    results: list = [[] for _ in items]
    active = []
    for k, (enc, samples) in enumerate(items):
        try:
            enc._add(enc._check(samples))
        except AudioInputError as e:
            results[k] = e
            continue
        active.append(k)
    for k, frames in zip(active, advance_all([items[k][0] for k in active])):
        results[k] = frames
    return results

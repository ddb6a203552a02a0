"""Input side of a session's frame scheduler: packet arrivals -> the timeline anchor, 16 kHz audio
-> (silence-gated) streaming encoder -> per-frame blocks. ``FrameScheduler`` (scheduler.py) mixes
this in; the timeline itself is described there and in docs/server.md."""

from __future__ import annotations

import bisect
import logging
import math
import time
from dataclasses import dataclass

import numpy as np

from realtime.server.media import ENCODER_RATE
from realtime.server.worker import WorkerClosed

log = logging.getLogger(__name__)

HANGOVER = 2  # silent frames still rendered after speech so the mouth closes smoothly
ANCHOR_FIRST_PACKETS = 10  # 200 ms of audio before the timeline is fixed (it is re-fixed in silence)
ANCHOR_PACKETS = 250  # 5 s of packets for the arrival-time anchor
ANCHOR_PERCENTILE = 5
PACKET_S = 0.020  # WebRTC audio packetisation
RECEPTIVE_FIELD_S = 0.0125  # log-mel window + encoder convolutions past the last step (visemes.windows)
ARRIVAL_MARGIN_S = 0.008  # packets arriving this much earlier than the anchor still meet the budget
REANCHOR_S = 0.008  # re-anchoring is for clock drift (ppm): only a clear, lasting shift
REANCHOR_SILENCE_S = 3.0  # input silent this long (and nothing pending): a shift is unnoticeable
RETARGET_QUIET_S = 0.1  # a change of latency target waits until the last loud packet's frame left + this
MAX_ENCODE_BACKLOG_S = 1.0  # more audio than this waiting for the encoder: skip ahead
LIGHT_ENCODER_LEVEL = 2  # degradation level from which encoder calls are the cheap kind
REST_STRIDE = 2  # rest (idle-motion) frames rendered for every 2nd avatar frame: 12.5 fps idle motion
GATE_AFTER_S = 0.4  # silence fed to the encoder before it is gated (covers block past + hangover)
GATE_CONTEXT_S = 0.2  # audio before a speech onset re-encoded on resume (the block's past steps)
# Audio goes to the encoder when it completes a frame (every other 20 ms packet at 25 fps: half the
# jobs, no added delay), or once this much is waiting whatever the arithmetic says.
MAX_PUSH_WAIT = 3 * 320
THIN_LEVEL = 3  # the top degradation level: every other speech frame repeats the one before


def quality_for(level: int) -> str:
    """The renderer hint (``RenderState.data["quality"]``) of a degradation level: "full"; "low"
    from level 2 (the diffusion path samples fewer steps); "lighter" at THIN_LEVEL (the diffusion
    path hands its frames to the embedded renderer). The embedded renderer ignores it."""
    return "lighter" if level >= THIN_LEVEL else "low" if level >= 2 else "full"


@dataclass
class Block:
    block: np.ndarray
    silent: bool
    arrival: float  # arrival time of the packet holding the sample this frame shows


def split_encoder_output(item) -> tuple[int, np.ndarray]:
    """``(index, block)`` tuples (test stand-ins) or ``FrameFeatures`` (index, features tensor)."""
    if isinstance(item, tuple):
        idx, block = item
    else:
        idx, block = item.index, getattr(item, "features", None)
        block = item.block if block is None else block
    if hasattr(block, "detach"):
        block = block.detach().cpu().numpy()
    return int(idx), np.asarray(block, dtype=np.float32)



class InputStage:
    """Mixin: needs the attributes FrameScheduler.__init__ sets."""

    # ---- input -------------------------------------------------------------------------------
    def on_packet(self, end16: int, arrival: float) -> None:
        last = self.ring16.read(end16 - 320, 320)
        if float(np.sqrt(np.mean(np.square(last, dtype=np.float64)))) >= self.silence_rms:
            self._last_loud_arrival = arrival
        self._packets.append((end16, arrival))
        if len(self._packets) > ANCHOR_PACKETS + 50:
            del self._packets[:50]
        # When input time 0 "arrived": a packet's last sample arrives with it, so a low percentile
        # of (arrival - end) over recent packets is a jitter-robust estimate (the minimum alone
        # swings by 10+ ms on a loaded CPU).
        offs = np.fromiter((a - e / ENCODER_RATE for e, a in self._packets[-ANCHOR_PACKETS:]), float)
        a0 = float(np.percentile(offs, ANCHOR_PERCENTILE)) if len(offs) >= 20 else float(offs.min())
        cut = self._wanted_cut(arrival)
        if self.phi is not None:  # how much later than the anchor expects (eats the compute window)
            self.metrics.packet_lateness.observe(max(0.0, arrival - self.a0 - end16 / ENCODER_RATE))
        if self.phi is None:
            if len(self._packets) >= ANCHOR_FIRST_PACKETS:  # a few packets first: the min needs samples
                self.cut_s = cut
                self._set_anchor(a0)
        elif cut != self.cut_s and self._quiet(
                arrival, self.budget_s + RETARGET_QUIET_S, self.budget_s - self.lookahead_s + (HANGOVER + 1) * self.period):
            # The load changed (engine.LoadWatch): aim at the other target. In silence only, like the
            # re-anchoring below: the video holds or skips one rest frame's worth, the audio 20 ms
            # of silence. In-flight (silent) results belong to the old grid: dropped.
            self.counts["retarget"] += 1
            self.cut_s = cut
            self.gen += 1
            self._set_anchor(a0)
        elif abs(a0 - self.a0) > REANCHOR_S and self._quiet(arrival, REANCHOR_SILENCE_S):
            # Only in silence (nothing pending, the last speech long enough ago to have left): the
            # shift is invisible and inaudible, and keeps a long session on the sender's clock.
            self.counts["reanchor"] += 1
            self._set_anchor(a0)
        self._audio_wake.set()

    def _quiet(self, arrival: float, seconds: float, speech_s: float | None = None) -> bool:
        """Input silent for ``seconds``, the last speech block added ``speech_s`` ago (default: the
        same; its frame and the hangover's leave within budget - look-ahead + the hangover) and no
        frame pending: a timeline shift is unseen."""
        speech_s = seconds if speech_s is None else speech_s
        return (arrival - self._last_loud_arrival > seconds and arrival - self._last_speech_t > speech_s
                and not self.ready)

    def _wanted_cut(self, now: float) -> float:
        """How far under the budget to aim now (engine.LoadWatch; 0 without one)."""
        if self.load is None or not self.load.light(now, self.light_sessions):
            return 0.0
        return self.light_cut_s

    def _set_anchor(self, a0: float) -> None:
        """Fixes the timeline. Latency is measured from the arrival of the packet holding a frame's
        content, so content sits just after a packet boundary (phase ``content_phase``), placed so
        that the frame's whole look-ahead ends just before a later packet boundary: the frame can be
        computed one packet earlier than with an arbitrary phase (42 ms for encoder + renderer at
        the default budget instead of 9..42 ms). The video slot grid is shifted by ``video_offset_s``
        (< one packet) to make both hold exactly; the audio output follows the same shift. Any of the
        frame period's packet boundaries gives the same latency (slots and content move together):
        ``phases`` (engine.SlotPhases) picks the one least used by the other sessions, adding
        whole packets to the offset (< one frame)."""
        t0 = self.clock.start()
        first = self.phi is None
        self.a0 = a0
        target = self.budget_s - ARRIVAL_MARGIN_S - self.cut_s  # packet arrival -> frame departure
        pkt = PACKET_S
        if abs(self.period / pkt - round(self.period / pkt)) < 1e-9:
            boundary = (self._packets[-1][0] % (ENCODER_RATE * pkt)) / ENCODER_RATE if self._packets else 0.0
            x = t0 - a0 - target - pkt  # phi - offset - phase
            self.video_offset_s = (boundary - x) % pkt
            n = round(self.period / pkt)
            if self.phases is not None and n > 1:
                grid = t0 + self.video_offset_s
                self.video_offset_s += pkt * self.phases.choose(id(self), [grid + m * pkt for m in range(n)], self.period)
            self.phi = x + self.video_offset_s + self.content_phase
        else:  # frame period not a whole number of packets: no alignment
            self.video_offset_s = 0.0
            self.phi = t0 - a0 - target
        k = -math.floor(self.phi * self.fps)
        self.K, self.e0 = k, self.phi + k / self.fps
        if first:
            self.enc_pos = round(self.e0 * ENCODER_RATE)
        else:  # restart the encoder on the new grid after the audio it already has
            self.blocks.clear()
            self.interrupt_encoder_only(max(self.enc_pos, self.ring16.end))
            self.rendered_upto = self.enc_base - 1

    def _arrival_of(self, sample: int) -> float:
        i = bisect.bisect_right([p[0] for p in self._packets], sample)
        return self._packets[min(i, len(self._packets) - 1)][1] if self._packets else time.monotonic()

    def avatar_index(self, slot: int) -> int:
        if self.epoch is None or self.clock.t0 is None:
            return slot
        return slot + round((self.clock.t0 + self.video_offset_s - self.epoch) * self.fps)

    def slot_time(self, slot: int) -> float:
        return (self.clock.t0 or 0.0) + self.video_offset_s + slot * self.period


    # ---- encoder loop ------------------------------------------------------------------------
    async def encode_loop(self) -> None:
        min_push = ENCODER_RATE // 50  # 20 ms
        while True:
            await self._audio_wake.wait()
            self._audio_wake.clear()
            end = self.ring16.end
            if self.phi is None or end - self.enc_pos < min_push:  # no timeline yet: nothing to place
                continue
            if end - self.enc_pos > MAX_ENCODE_BACKLOG_S * ENCODER_RATE:  # worker too slow: skip ahead
                log.warning("encoder backlog %.2f s: skipping audio", (end - self.enc_pos) / ENCODER_RATE)
                self.counts["encode_skips"] += 1
                self.interrupt_encoder_only(end)  # restarts on the next frame's grid sample, >= end
                if end - self.enc_pos < min_push:
                    continue  # the audio after the skip is still to come
            if (not self.gated and not self.need_reset and end - self.enc_pos < MAX_PUSH_WAIT
                    and end < self._frame_need_sample(self.enc_base + self.enc_frames)):
                continue  # this audio completes no frame yet: it goes with the packet that does
            if not self._gate(end):
                continue
            start, gen, reset = self.enc_pos, self.gen, self.need_reset
            if reset:
                self.enc_frames = 0
            samples = self.ring16.read(start, end - start)
            self.enc_pos, self.need_reset = end, False
            spec, base = self._fused_spec(end), self.enc_base
            t_sub = time.monotonic()
            if self._packets:
                self.metrics.push_wait.observe(max(0.0, t_sub - self._packets[-1][1]))
            try:
                out, drawn = await self.worker.run(lambda: self._encode(samples, reset, spec), kind="encode")
            except WorkerClosed:
                continue
            except Exception as e:  # busy, or the model process failed: that audio is lost, so
                # the encoder restarts on the frame grid after it (frames keep their indices)
                log.warning("encoder job failed (%s: %s); restarting the encoder", type(e).__name__, e)
                self.counts["encode_failures"] += 1
                if gen == self.gen:
                    self.interrupt_encoder_only(max(self.enc_pos, self.ring16.end))
                continue
            self.metrics.push_round_trip.observe(time.monotonic() - t_sub)
            if gen != self.gen:
                self.metrics.frames_dropped.inc(len(drawn["frames"]) if drawn else 0)
                continue
            for item in out:
                j, block = split_encoder_output(item)
                self._add_block(self.enc_base + j, block)
                self.enc_frames = max(self.enc_frames, j + 1)
            if drawn and base == self.enc_base:
                self._take_drawn(base, drawn)
            self._render_wake.set()

    def _fused_spec(self, end: int) -> dict | None:
        """What the model process should render right after this push, in the same request: the
        speech (and hangover) frames the push completes, as ``(encoder index, avatar frame,
        deadline)``. Saves a round trip per frame (the push's answer, the render loop's wake-up,
        a second request, which can queue behind other sessions' work) off the 42 ms between a
        frame's last packet and its slot. At the top level odd frames are thinned here, as the
        render loop does. None where the encoder cannot do it (thread mode, test stand-ins)."""
        if self.state is None or not hasattr(self.encoder, "push_render") or "remote_id" not in self.state.data:
            return None
        frames, last, j = [], self.last_speech_i, self.enc_frames
        real_clock = self.clock.now is time.monotonic  # the deadline is checked in another process
        while self._frame_need_sample(self.enc_base + j) <= end and len(frames) < self.max_chunk:
            i = self.enc_base + j
            j += 1
            if not self._block_silent(i):
                last = i
            elif i - last > HANGOVER:
                continue
            if self.level >= THIN_LEVEL and i % 2:
                self.thinned.add(i)
                continue
            slot = i + self.K
            frames.append((j - 1, self.avatar_index(slot), self.slot_time(slot) if real_clock else math.inf))
        if not frames:
            return None
        return {"sid": self.state.data["remote_id"], "seed": self.state.seed, "frames": frames,
                "quality": quality_for(self.level)}

    def _take_drawn(self, base: int, drawn: dict) -> None:
        """Frames rendered with the push (``_fused_spec``) become ready like the render loop's."""
        now, n = self.clock.now(), len(drawn["frames"])
        for j, frame in drawn["frames"]:
            i = base + j
            b, slot = self.blocks.get(i), i + self.K
            if (b is None or b.silent or slot in self.ready or self.slot_time(slot) <= now
                    or len(self.ready) >= self.max_frames_ahead):  # bounded even if nothing sends them
                self.metrics.frames_dropped.inc()
                continue
            self._make_ready(slot, frame, b.arrival, now)
        if n:
            self._rendered(n, drawn["seconds"] / n)

    def _make_ready(self, slot: int, frame, arrival: float, now: float) -> None:
        """A rendered speech frame waits for its slot (``arrival``: of the packet it shows)."""
        self.ready[slot] = frame
        self.ready_arrival[slot] = arrival
        self.metrics.frame_slack.observe(self.slot_time(slot) - now)

    def _rendered(self, n: int, seconds_per_frame: float) -> None:
        """Bookkeeping for ``n`` frames rendered (render loop or with their push)."""
        self.metrics.render_time.observe(seconds_per_frame)
        self.metrics.frames_rendered.inc(n)
        self.render_s_per_frame = 0.8 * self.render_s_per_frame + 0.2 * seconds_per_frame

    def grid_sample(self, i: int) -> int:
        """16 kHz input sample at which input frame ``i`` sits (the frame grid ``e0 + i / fps``)."""
        return round((self.e0 + i * self.period) * ENCODER_RATE)

    def _frame_need_sample(self, i: int) -> int:
        """Input sample after which the encoder can emit frame ``i`` (the streaming encoder's rule:
        the block's newest step needs mel frames up to 2 * step + 2, i.e. 160 * that + 200 samples
        since its reset, which was at the grid position of ``enc_base``)."""
        step = int((i - self.enc_base) * 50 / self.fps) + round(self.lookahead_s * 50) - 1
        return self.grid_sample(self.enc_base) + 160 * (2 * step + 2) + 200

    def _gate(self, end: int) -> bool:
        """Silence gating: after GATE_AFTER_S of silence the encoder is not fed (its frames are rest
        frames anyway); on the first loud 20 ms it restarts on the frame grid GATE_CONTEXT_S before
        it, so the first speech frames still have left context. Returns whether to encode now."""
        seg = self.ring16.read(self.enc_pos, end - self.enc_pos)
        n = len(seg) // 320 * 320
        sub = np.sqrt(np.mean(np.square(seg[:n].reshape(-1, 320), dtype=np.float64), axis=1)) if n else np.zeros(0)
        loud = np.nonzero(sub >= self.silence_rms)[0]
        if not self.gated:
            self._quiet_s = 0.0 if len(loud) else self._quiet_s + len(seg) / ENCODER_RATE
            if self._quiet_s >= GATE_AFTER_S:
                self.gated = True
                self.counts["gated"] += 1
            return True
        if not len(loud):
            self.enc_pos = end  # silence while gated: nothing to encode
            return False
        onset = self.enc_pos + int(loud[0]) * 320
        i = math.floor(((onset / ENCODER_RATE - GATE_CONTEXT_S) - self.e0) * self.fps)
        self.enc_base = max(i, self.rendered_upto + 1)
        self.enc_pos = self.grid_sample(self.enc_base)
        self.need_reset, self.gated, self._quiet_s = True, False, 0.0
        return True

    def interrupt_encoder_only(self, end: int) -> None:
        i = math.ceil((end / ENCODER_RATE - self.e0) * self.fps)
        self.enc_base, self.enc_pos = i, self.grid_sample(i)
        self.need_reset = True

    def _encode(self, samples: np.ndarray, reset: bool, spec: dict | None = None) -> tuple[list, dict | None]:
        """(encoder frames, frames rendered with them or None): on the worker thread."""
        t = time.perf_counter()
        if hasattr(self.encoder, "light"):  # degraded: cheaper encoder calls (StreamingAudioEncoder.light)
            self.encoder.light = getattr(self, "level", 0) >= LIGHT_ENCODER_LEVEL
        if reset:
            self.encoder.reset()
        if spec is not None:
            out, drawn = self.encoder.push_render(samples, spec)
        else:
            out, drawn = self.encoder.push(samples), None
        self.metrics.encode_time.observe(time.perf_counter() - t - (drawn["seconds"] if drawn else 0.0))
        return out, drawn

    def _block_silent(self, i: int) -> bool:
        """Whether input frame ``i``'s block (40 ms before it to the look-ahead after) is silence."""
        center = self.grid_sample(i)
        lo = center - int(0.04 * ENCODER_RATE)
        window = self.ring16.read(lo, int((0.04 + self.lookahead_s) * ENCODER_RATE))
        rms = float(np.sqrt(np.mean(np.square(window, dtype=np.float64)))) if len(window) else 0.0
        return rms < self.silence_rms

    def _add_block(self, i: int, block: np.ndarray) -> None:
        silent = self._block_silent(i)
        if not silent:
            self.last_speech_i = i
            self._last_speech_t = time.monotonic()
        # a short hangover keeps rendering just after speech so the renderer can close the mouth
        skip = silent and i - self.last_speech_i > HANGOVER
        self.blocks[i] = Block(block, skip, self._arrival_of(self.grid_sample(i)))
        if len(self.blocks) > 4 * self.max_frames_ahead:  # bounded even if nothing consumes them
            for k in sorted(self.blocks)[: len(self.blocks) - 4 * self.max_frames_ahead]:
                del self.blocks[k]

    def _input_loud(self, i: int) -> bool:
        """Whether input frame ``i``'s own +-40 ms of audio (if it has arrived) is speech."""
        center = self.grid_sample(i)
        w = self.ring16.read(center - 640, 1280)
        return float(np.sqrt(np.mean(np.square(w, dtype=np.float64)))) >= self.silence_rms

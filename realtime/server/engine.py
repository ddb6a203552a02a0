"""What all sessions share: the avatar, one renderer per look-ahead setting, the encoder factory and
the inference worker. Models are loaded once per process (the loaders cache them) and only ever used
from the worker thread."""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from realtime.config import CONFIG_DIR
from realtime.server.config import DiffusionConfig, RealtimeConfig
from realtime.server.worker import InferenceWorker

log = logging.getLogger(__name__)

# Future audio each look-ahead setting needs: LatentSync's block ends 6 encoder steps (120 ms)
# past the frame centre; the low-latency viseme model is trained for at most 40 ms.
LOOKAHEAD_S = {"full": 0.120, "low": 0.040}
# Worker threads when the models run in a child process: they only wait on pipes, and the more jobs
# reach the child at once, the more encoder pushes it batches into one call.
PROCESS_THREADS = 8


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

    def get(self, renderer: Any, avatar: Any, index: int, seed: int):
        with self._lock:  # one render per key even when two sessions ask at once
            return self._get(renderer, avatar, index, seed)

    def _get(self, renderer: Any, avatar: Any, index: int, seed: int):
        key = (id(renderer), id(avatar), seed, index)
        frame = self._frames.get(key)
        if frame is not None:
            self.hits += 1
            return frame
        self.misses += 1
        skey = (id(renderer), seed)
        if skey not in self._states:
            self._states[skey] = renderer.new_state(seed)
            while len(self._states) > MAX_REST_STATES:  # clients choose seeds: cycling them costs no memory
                self._states.popitem(last=False)
        self._states.move_to_end(skey)
        frame = renderer.rest_frame(avatar, index, self._states[skey])
        self._frames[key] = frame
        while len(self._frames) > self.max_items:
            self._frames.popitem(last=False)
        return frame


class SlotPhases:
    """Where each session's video slots fall within a frame period (seconds of the monotonic clock,
    modulo the period). A session's slot grid can sit at any audio packet boundary of its frame
    period with the same latency (timeline._set_anchor); it takes the one with the least load from
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
    (timeline.InputStage.on_packet). Event loop only."""

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
    avatar: Any
    renderer_factory: Callable[[str], Any]  # lookahead -> Renderer (cached below)
    encoder_factory: Callable[[str, int], Any]  # (lookahead, fps) -> a new per-session encoder
    worker: InferenceWorker
    epoch: float = field(default_factory=time.monotonic)  # avatar frame 0 (see RestFrameCache)
    rest_cache: RestFrameCache = field(default_factory=RestFrameCache)
    phases: SlotPhases = field(default_factory=SlotPhases)
    load: LoadWatch = field(default_factory=LoadWatch)
    backend: Any = None  # inference_process.ProcessBackend when the models run in a child process
    _renderers: dict[str, Any] = field(default_factory=dict)

    def renderer(self, lookahead: str) -> Any:
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

    def release(self, *objs: Any) -> None:
        """Frees a closed session's model-side state (encoder, renderer state) where it lives
        elsewhere (the inference process); fire and forget, off the event loop."""
        for obj in objs:
            fn = getattr(obj, "release", None)
            if fn is not None:
                try:
                    self.worker.submit(fn, kind="release")
                except Exception:  # worker closed or full: the child's LRU bound reclaims it
                    pass

    def close(self) -> None:
        self.worker.close()
        if self.backend is not None:
            self.backend.close()


def renderer_kind(renderer: str, lookahead: str) -> str:
    """The renderer sessions of ``lookahead`` use: the configured one, except that low-latency
    sessions always use the embedded renderer (LatentSync's audio window needs 120 ms ahead)."""
    return "embedded" if lookahead == "low" else renderer


def make_renderer(renderer: str, lookahead: str, diffusion: DiffusionConfig | None = None) -> Any:
    """Builds the renderer ``renderer_kind`` names (loads weights: seconds, or minutes for a
    5 GB UNet). Used by the in-process engine and by the inference process alike."""
    from realtime.render.embedded import EmbeddedRenderer

    if renderer_kind(renderer, lookahead) == "diffusion":
        from realtime.render.diffusion import DiffusionRenderer
        from realtime.render.samplers import SamplerConfig

        d = diffusion or DiffusionConfig()
        sampler = SamplerConfig(kind=d.sampler, steps=d.steps, guidance=d.guidance, deep_cache_interval=d.deep_cache)
        unet_config = d.unet_config or str(CONFIG_DIR / "unet" / "stage2.yaml")
        r = DiffusionRenderer.from_files(d.unet, unet_config, d.vae, sampler,
                                         device=None if d.device == "auto" else d.device)
        r.low_quality_steps = d.low_quality_steps
        if d.whisper is None:  # the viseme model reads tiny.en features: only when the sessions get those
            # the lighter renderer of the top degradation level; no idle motion, as the diffusion frames
            r.fallback = EmbeddedRenderer(lookahead="full", idle=False)
        return r

    return EmbeddedRenderer(lookahead=lookahead)


def whisper_path(renderer: str, lookahead: str, diffusion: DiffusionConfig | None) -> str | None:
    """The Whisper checkpoint whose features the sessions of ``lookahead`` get: the diffusion
    renderer's (``diffusion.whisper``) where it renders them, else the embedded tiny.en (None)."""
    if diffusion is not None and renderer_kind(renderer, lookahead) == "diffusion":
        return diffusion.whisper
    return None


def check_diffusion_files(d: DiffusionConfig) -> None:
    """Fails at once, naming the key and its flag, when a file the diffusion renderer needs is not
    there (before an inference process spends seconds loading the others)."""
    from pathlib import Path

    from realtime.errors import WeightsError

    for key, flag, path, want in (("unet", "--unet", d.unet, "file"), ("unet_config", "--unet-config", d.unet_config, "file"),
                                  ("vae", "--vae", d.vae, "dir"), ("whisper", None, d.whisper, "file")):
        if path is None:
            continue
        p = Path(path).expanduser()
        if not (p.is_dir() if want == "dir" else p.is_file()):
            how = f"diffusion.{key}" + (f" / {flag}" if flag else "")
            raise WeightsError(f"{how}: {path} is not an existing {'folder' if want == 'dir' else 'file'}; "
                               "give a local path (nothing is downloaded)")


def build_engine(config: RealtimeConfig, avatar: Any = None) -> Engine:
    """The real engine: embedded (or diffusion) renderer, streaming Whisper encoder, avatar
    (``avatar`` overrides ``config.avatar_dir``; neither: the default avatar)."""
    from realtime.face.avatar import default_avatar
    from realtime.face.sources import load_avatar_source

    if config.renderer == "diffusion":
        check_diffusion_files(config.diffusion)

    if avatar is None:  # a prepared folder, or a photo or video prepared now (and cached)
        avatar = load_avatar_source(config.avatar_dir) if config.avatar_dir else default_avatar()
    if config.inference == "process":
        return _process_engine(config, avatar)

    def renderer_factory(lookahead: str):
        return make_renderer(config.renderer, lookahead, config.diffusion)

    shared: dict = {}

    def encoder_factory(lookahead: str, fps: int):
        from realtime.audio.streaming import StreamingAudioEncoder, StreamingWeights
        from realtime.audio.whisper_loader import load_whisper
        from realtime.visemes.windows import WINDOWS

        path = whisper_path(config.renderer, lookahead, config.diffusion)
        if path not in shared:  # fused weights + padding keys/values: once for all sessions
            shared[path] = StreamingWeights(load_whisper(path))
        # Low-latency mode: the viseme model's window [c-8, c+2) needs 40 ms of future audio.
        w = WINDOWS[lookahead]
        # catch_up: a speech onset re-encodes 0.2 s of context in one call instead of 3-4 (timeline._gate)
        return StreamingAudioEncoder(shared[path], fps=fps, extra_lookahead_ms=0, block=(w.past, w.future),
                                     catch_up=True)

    engine = Engine(avatar=avatar, renderer_factory=renderer_factory, encoder_factory=encoder_factory,
                    worker=InferenceWorker(threads=config.inference_threads))
    engine.warm_up(("full", "low"), config.fps)
    return engine


def _process_engine(config: RealtimeConfig, avatar: Any) -> Engine:
    """Models in a child process (inference_process.py); this process keeps the avatar for
    timing and fallbacks, and ``PROCESS_THREADS`` worker threads that forward jobs to the child."""
    from realtime.server.inference_process import EncoderProxy, ProcessBackend, RendererProxy

    backend = ProcessBackend(str(avatar.directory), config.renderer, config.fps, connections=PROCESS_THREADS + 1,
                             nice=config.inference_nice, diffusion=dataclasses.asdict(config.diffusion))
    engine = Engine(avatar=avatar,
                    renderer_factory=lambda la: RendererProxy(backend, la, renderer_kind(config.renderer, la)),
                    encoder_factory=lambda la, fps: EncoderProxy(backend, la, fps),
                    worker=InferenceWorker(threads=PROCESS_THREADS), backend=backend)
    engine.warm_up(("full", "low"), config.fps)
    return engine

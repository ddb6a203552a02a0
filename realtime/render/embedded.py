"""The embedded renderer: audio -> visemes and blendshapes -> landmark-driven mouth warp on the CPU.

It needs no downloaded weights (the viseme model ships with the project), runs well above real time on
one core, and is the default whenever no UNet checkpoint is configured. Per frame:

    Whisper block --VisemePredictor--> 15 viseme probabilities + ARKit blendshapes   (events)
                  --> MouthParams (silence and p/b/m gate the lips shut)
                  --> FaceRig warp (one remap) + MouthInterior + feathered paste-back
                  --> idle blink / head sway for photos

Per-session state (the predictor's recurrent state, the idle schedule) lives in ``RenderState``, so
chunked rendering equals whole-clip rendering; per-avatar-frame precomputation (rig, interior) is
cached in the renderer and shared by all sessions.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from realtime.audio.features import Audio2Feature, chunk_features, num_video_frames
from realtime.audio.io import load_audio
from realtime.render.base import MAX_CHUNK, FrameEvent, RenderedChunk, Renderer, RenderState, check_chunk
from realtime.render.easing import smoothstep
from realtime.render.idle import IdleMotion, move_frame, moved_box
from realtime.render.mouth_interior import MouthInterior
from realtime.render.mouth_warp import FaceRig, MouthParams
from realtime.visemes.phonemes import VISEMES
from realtime.visemes.runtime import VisemePredictor


if TYPE_CHECKING:  # renderers read the whole face track; the avatar module is imported by its users
    from realtime.face.avatar import Avatar

log = logging.getLogger(__name__)

RIG_CACHE = 256  # rigs kept per avatar (a video's ping-pong track revisits frames; ~1.5 MB each at 256)
# Deformed face regions kept by (source frame, exact parameters): a listening avatar shows the same
# closed mouth frame after frame (rest frames cost 2.6 -> ~0.9 ms on a photo avatar), and quantised
# parameters repeat in speech pauses. ~100 kB each for a 181-pixel region.
ROI_CACHE = 64
# Head-moved photo frames by (source frame, time, seed): every session with that seed at that moment
# (their avatar index is the time since the engine's epoch) and its rest frame share one. 768 kB each.
BASE_CACHE = 8
SPEECH_GATE = (0.25, 0.6)  # 1 - p(sil) below the first value keeps the mouth shut, above the second opens fully
BILABIAL_SEAL = (0.3, 0.7)  # p(PP) range over which the lips are pressed shut
PARAM_DECIMALS = 4


def params_from_prediction(probs: np.ndarray, shapes: np.ndarray, names: list[str]) -> list[MouthParams]:
    """Per-frame mouth parameters from the viseme model's outputs.

    The model's ``mouthClose`` says how closed the lips are (1 on silence and p/b/m), so it is applied
    as a fraction of the jaw opening (ARKit's subtractive ``mouthClose = jawOpen x closure``): on real
    speech this follows the phones better than subtracting it (correlation 0.70 vs 0.67 on
    arctic_a0007). Silence (p(sil)) and bilabials (p(PP)) close the lips whatever the regressor says."""
    probs = np.asarray(probs, np.float64)
    speech = smoothstep(1 - probs[:, 0], *SPEECH_GATE)
    seal = smoothstep(probs[:, VISEMES.index("PP")], *BILABIAL_SEAL)
    out = []
    for k in range(len(probs)):
        p = MouthParams.from_blendshapes(names, shapes[k])
        g = float(speech[k])
        jaw = p.jawOpen * g
        closure = max(p.mouthClose, float(seal[k]))
        out.append(_quantised(p.replace(jawOpen=jaw, mouthClose=jaw * closure, mouthFunnel=p.mouthFunnel * g,
                                        mouthPucker=p.mouthPucker * g, mouthStretch=p.mouthStretch * g)))
    return out


def _quantised(p: MouthParams) -> MouthParams:
    """Rounds to 1e-4 (a thousandth of a pixel of lip motion). The model's float32 output differs in
    the last bits between chunk sizes (batched GRU); rounding keeps chunked == whole pixel-exact."""
    return MouthParams(*(round(float(v), PARAM_DECIMALS) for v in dataclasses.astuple(p)))


class VisemeModel:
    """The shipped viseme model behind the small interface the renderer uses. The weights are loaded
    once (``VisemePredictor.load`` caches them); each session's state is its own ``VisemePredictor``."""

    def __init__(self, kind: str, weights: str | None = None):
        self.kind = kind
        self.weights = weights  # None: the checkpoint shipped in models/weights
        proto = VisemePredictor.load(kind, weights)  # fails early, naming the file, if the weights are missing
        self.window = proto.window
        self.block_rows = proto.rows
        self.blendshape_names = list(proto.blendshape_names)
        assert tuple(proto.viseme_names) == VISEMES, proto.viseme_names

    def new_state(self):
        return VisemePredictor.load(self.kind, self.weights)

    def predict(self, blocks: np.ndarray, state) -> tuple[np.ndarray, np.ndarray]:
        out = state.predict(blocks)
        return out["probs"], out["blendshapes"]

    def blocks(self, features: np.ndarray, fps: float, num_frames: int) -> np.ndarray:
        """Per-frame blocks of whole-clip features (T, 5, 384) for this model's look-ahead window."""
        from realtime.visemes.features import frame_steps  # imports torch: only offline rendering needs it

        idx = np.clip(frame_steps(self.window, num_frames, fps), 0, len(features) - 1)
        return np.ascontiguousarray(features[idx].reshape(num_frames, self.block_rows, features.shape[-1]))


@dataclass
class EmbeddedState(RenderState):
    """A session's idle motion (head sway, blinks on photos) and viseme-model state."""

    idle: IdleMotion | None = None
    visemes: Any = None  # VisemePredictor's recurrent state, made on the first chunk


class EmbeddedRenderer(Renderer):
    """Landmark-driven renderer. ``lookahead``: "full" (120 ms future audio) or "low" (<= 40 ms)."""

    name = "embedded"

    def __init__(self, lookahead: str = "full", idle: bool = True, predictor: Any = None,
                 region_side: int | None = None, weights: str | None = None):
        if lookahead not in ("full", "low"):
            raise ValueError(f"lookahead must be 'full' or 'low', got {lookahead!r}")
        self.lookahead = lookahead
        self.region_side = region_side  # None: from the face size
        self.idle = idle
        self._predictor = predictor
        self.weights = weights  # a viseme checkpoint from `syncvid train-visemes`; None = shipped
        self._rigs: weakref.WeakKeyDictionary[Any, OrderedDict] = weakref.WeakKeyDictionary()
        self._rois: weakref.WeakKeyDictionary[Any, OrderedDict] = weakref.WeakKeyDictionary()
        self._bases: weakref.WeakKeyDictionary[Any, OrderedDict] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    # ---- model ------------------------------------------------------------------------------------
    @property
    def predictor(self):
        """Shared model adapter: ``new_state()``, ``predict(blocks, state)``, ``blocks(...)``, names."""
        if self._predictor is None:
            self._predictor = VisemeModel(self.lookahead, self.weights)
        return self._predictor

    def new_state(self, seed: int = 0) -> EmbeddedState:
        # The predictor's state is created on the first chunk, so parameter-only use needs no model.
        return EmbeddedState(seed=seed, idle=IdleMotion(seed))

    # ---- per avatar frame ------------------------------------------------------------------------
    def rig(self, avatar: Avatar, frame_index: int) -> tuple[FaceRig, MouthInterior] | None:
        """The cached rig of the avatar's source frame, or None when that frame has no face."""
        src = _source_index(avatar, frame_index)
        hit = self._cached(self._rigs, avatar, src)
        if hit is not None:
            return hit
        lm = avatar.landmarks(frame_index)
        if lm is None or not np.isfinite(lm).all():
            return None
        frame = avatar.frame(frame_index)
        rig = FaceRig.build(lm, frame.shape[:2], self.region_side, eyes=bool(getattr(avatar, "is_photo", False)))
        entry = (rig, MouthInterior.build(np.asarray(frame), rig))
        self._store(self._rigs, avatar, src, entry, RIG_CACHE)
        return entry

    # ---- rendering --------------------------------------------------------------------------------
    def render_params(self, avatar: Avatar, frame_index: int, params: MouthParams, state: EmbeddedState) -> np.ndarray:
        """One output frame (H, W, 3) uint8 for explicit mouth parameters (SDK clients, tests)."""
        frame = np.asarray(avatar.frame(frame_index))
        entry = self.rig(avatar, frame_index)
        photo = bool(getattr(avatar, "is_photo", False)) and self.idle
        t = frame_index / float(getattr(avatar, "fps", 25.0) or 25.0)
        idle = state.idle
        if idle is None:
            idle = state.idle = IdleMotion(state.seed)
        if entry is None:
            return frame.copy()  # no face in this frame: passed through unchanged
        rig, interior = entry
        if not photo:
            return rig.paste_back(frame, self._deformed_region(avatar, frame_index, frame, rig, interior, params))
        params = params.replace(eyeBlink=max(params.eyeBlink, idle.blink(t)))
        region = self._deformed_region(avatar, frame_index, frame, rig, interior, params)
        lm = rig.region.to_frame(rig.landmarks)
        pivot = lm[152] + 0.5 * (lm[152] - lm[6])  # the neck, below the chin
        m = idle.head_matrix(t, (float(pivot[0]), float(pivot[1])), frame.shape[:2])
        return self._moved(avatar, frame_index, state.seed, frame, rig, region, m)

    def _moved(self, avatar: Avatar, frame_index: int, seed: int, frame: np.ndarray, rig: FaceRig,
               region: np.ndarray, m: np.ndarray) -> np.ndarray:
        """The frame with ``region`` pasted, moved by the head pose ``m``. The whole-frame warp
        (0.7 ms at 512 px) depends only on (source frame, time, seed), so it is cached and shared by
        every frame of that moment (rest or speech, any session with that seed); only the box the
        paste changed is warped per frame (same pixels as warping the whole pasted frame, to
        rounding)."""
        r = rig.region
        y0, y1, x0, x1 = rig.paste_box
        boxes = moved_box(m, (r.y0 + y0, r.y0 + y1, r.x0 + x0, r.x0 + x1), frame.shape[:2])
        if boxes is None:  # the face near the frame border: warp the whole pasted frame
            return move_frame(rig.paste_back(frame, region), m)
        key = (_source_index(avatar, frame_index), int(frame_index), seed)
        base = self._cached(self._bases, avatar, key)
        if base is None:
            base = move_frame(frame, m)
            self._store(self._bases, avatar, key, base, BASE_CACHE)
        (dy0, dy1, dx0, dx1), (sy0, sy1, sx0, sx1) = boxes
        src = frame[sy0:sy1, sx0:sx1].copy()
        rig.paste_into(src, region, (sx0, sy0))
        m2 = m.copy()
        m2[:, 2] += m[:, :2] @ (sx0, sy0) - (dx0, dy0)  # both boxes' corners as origins
        out = base.copy()
        out[dy0:dy1, dx0:dx1] = cv2.warpAffine(src, m2, (dx1 - dx0, dy1 - dy0), flags=cv2.INTER_LINEAR,
                                                 borderMode=cv2.BORDER_REFLECT101)
        return out

    def _deformed_region(self, avatar: Avatar, frame_index: int, frame: np.ndarray, rig: FaceRig,
                         interior: MouthInterior, params: MouthParams) -> np.ndarray:
        """The region image for these parameters (warp + mouth interior), cached; never modified
        after it is cached (paste_back only reads it)."""
        key = (_source_index(avatar, frame_index), dataclasses.astuple(params))
        hit = self._cached(self._rois, avatar, key)
        if hit is not None:
            return hit
        disp = rig.displacement(params)
        work = rig.warp(frame, disp)
        interior.render(work, rig, disp, params)
        self._store(self._rois, avatar, key, work, ROI_CACHE)
        return work

    # Per-avatar LRU caches (rigs, deformed regions, head-moved frames), shared by the worker threads.
    def _cached(self, store: weakref.WeakKeyDictionary, avatar: Avatar, key: Any) -> Any:
        with self._lock:
            per_avatar = store.setdefault(avatar, OrderedDict())
            hit = per_avatar.get(key)
            if hit is not None:
                per_avatar.move_to_end(key)
            return hit

    def _store(self, store: weakref.WeakKeyDictionary, avatar: Avatar, key: Any, value: Any, limit: int) -> None:
        with self._lock:
            per_avatar = store.setdefault(avatar, OrderedDict())
            per_avatar[key] = value
            while len(per_avatar) > limit:
                per_avatar.popitem(last=False)

    def rest_frame(self, avatar: Avatar, frame_index: int, state: EmbeddedState) -> np.ndarray:
        return self.render_params(avatar, frame_index, MouthParams(), state)

    def warm_up(self, avatar: Avatar) -> None:
        """The viseme model, the avatar's first rig and the compiled warp kernel (whose first call
        loads or compiles it: 0.3-1 s), with a rest frame and an open mouth."""
        _ = self.predictor
        state = self.new_state(0)
        self.rest_frame(avatar, 0, state)
        self.render_params(avatar, 0, MouthParams(jawOpen=0.5), state)

    def predict(self, audio_blocks: np.ndarray, state: EmbeddedState) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """(N, 15) viseme probabilities, (N, K) blendshapes and their names; advances the model state."""
        if state.visemes is None:
            state.visemes = self.predictor.new_state()
        probs, shapes = self.predictor.predict(audio_blocks, state.visemes)
        return np.asarray(probs), np.asarray(shapes), list(self.predictor.blendshape_names)

    def render_chunk(self, avatar: Avatar, frame_indices: np.ndarray, audio_blocks: np.ndarray,
                     state: EmbeddedState) -> RenderedChunk:
        check_chunk(frame_indices, audio_blocks)
        probs, shapes, names = self.predict(audio_blocks, state)
        params = params_from_prediction(probs, shapes, names)
        frames, events = [], []
        for k, (i, p) in enumerate(zip(np.asarray(frame_indices).tolist(), params)):
            frames.append(self.render_params(avatar, int(i), p, state))
            events.append(FrameEvent(
                frame=int(i), face=bool(avatar.has_face(int(i))),
                visemes=dict(zip(VISEMES, probs[k].astype(float).tolist())),
                blendshapes=dict(zip(names, shapes[k].astype(float).tolist()))))
        return RenderedChunk(frames, events)


def _source_index(avatar: Avatar, frame_index: int) -> int:
    return avatar.source_index(frame_index)


def render_embedded(avatar: Avatar, audio: Any, fps: float = 25.0, seed: int = 0,
                    renderer: EmbeddedRenderer | None = None, progress: Any = None) -> list[np.ndarray]:
    """Renders a whole clip (path or 16 kHz samples) with the embedded renderer: one frame per video
    frame of the audio, for ``syncvid render`` and the lip-sync evaluation."""
    samples = load_audio(audio)
    renderer = renderer or EmbeddedRenderer()
    n = num_video_frames(len(samples), fps)
    feats = Audio2Feature().audio2feat(samples)
    blocks = renderer.predictor.blocks(feats, fps, n) if hasattr(renderer.predictor, "blocks") else \
        chunk_features(feats, fps, n)
    state = renderer.new_state(seed)
    frames: list[np.ndarray] = []
    for s in range(0, n, MAX_CHUNK):
        idx = np.arange(s, min(s + MAX_CHUNK, n))
        frames += renderer.render_chunk(avatar, idx, blocks[idx], state).frames
        if progress is not None:
            progress(len(idx))
    return frames

"""What runs inside the inference process (inference_process.py): the models, every session's
encoder and renderer state, and the serving of one wake-up's worth of requests."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)

MAX_STATES = 256  # per kind; a server that never released them (it crashed) cannot grow this process


class ChildEngine:
    def __init__(self, spec: dict) -> None:
        import cv2
        import torch

        from realtime.audio.streaming import StreamingWeights
        from realtime.audio.whisper_loader import load_whisper
        from realtime.face.avatar import Avatar, default_avatar
        from realtime.server.engine import RestFrameCache

        t = time.monotonic()
        torch.set_num_threads(1)  # few-row matmuls: extra intra-op threads only spin
        cv2.setNumThreads(1)
        self.fps = int(spec["fps"])
        self.avatar = Avatar.load(spec["avatar_dir"]) if spec.get("avatar_dir") else default_avatar()
        self.renderers = {la: _make_renderer(spec["renderer"], la) for la in ("full", "low")}
        self.weights = StreamingWeights(load_whisper())
        self.encoders: OrderedDict[int, Any] = OrderedDict()
        self.states: OrderedDict[int, Any] = OrderedDict()
        self.rest_cache = RestFrameCache()
        for r in self.renderers.values():  # first calls are slow (allocations, lazy model loads)
            r.rest_frame(self.avatar, 0, r.new_state(0))
        self.load_s = time.monotonic() - t

    def describe(self) -> str:
        return f"models loaded in {self.load_s:.1f} s"

    def serve(self, requests: list[tuple[Any, tuple]]) -> Iterator[tuple[Any, tuple]]:
        """Answers as they are ready: every encoder push first, in one batched call (they unblock
        the renders that follow), then renders and rest frames in arrival order."""
        from realtime.audio.streaming import push_many

        pushes = [(c, r) for c, r in requests if r[0] == "encode"]
        if pushes:
            try:
                items = []
                for _, (_, eid, lookahead, samples, reset, light) in pushes:
                    enc = self._encoder(eid, lookahead)
                    if reset:
                        enc.reset()
                    enc.light = light
                    items.append((enc, samples))
                results = push_many(items)
            except Exception as e:  # not one stream's bad audio (push_many reports those per stream)
                log.exception("batched encoder call failed")
                results = [RuntimeError(f"encoder failed: {type(e).__name__}: {e}")] * len(pushes)
                for _, r in pushes:  # their state is suspect: they start over
                    self.encoders.pop(r[1], None)
            for (c, _), res in zip(pushes, results):
                if isinstance(res, Exception):
                    yield c, ("error", res)
                else:
                    yield c, ("ok", [(f.index, f.features.numpy()) for f in res])
        # renders earliest deadline first, then rest frames (prepared a slot or more ahead), then the rest
        order = {"render": 0, "rest": 1}
        others = sorted((cr for cr in requests if cr[1][0] != "encode"),
                        key=lambda cr: (order.get(cr[1][0], 2), cr[1][-1] if cr[1][0] == "render" else 0.0))
        for c, r in others:
            try:
                yield c, ("ok", self._one(r))
            except Exception as e:  # delivered to the session that asked; this process carries on
                log.warning("inference request %s failed: %s", r[0], e)
                yield c, ("error", e if _picklable(e) else RuntimeError(f"{type(e).__name__}: {e}"))

    def _one(self, r: tuple) -> Any:
        import numpy as np

        kind = r[0]
        if kind == "render":
            _, sid, lookahead, seed, idx, blocks, quality, _deadline = r
            renderer = self.renderers[lookahead]
            state = self.states.get(sid)
            if state is None:
                state = self.states[sid] = renderer.new_state(seed)
                _bound(self.states)
            state.data["quality"] = quality
            chunk = renderer.render_chunk(self.avatar, np.asarray(idx), blocks, state)
            return chunk.frames, chunk.events
        if kind == "rest":
            _, lookahead, seed, index = r
            renderer = self.renderers[lookahead]
            return self.rest_cache.get(renderer, self.avatar, index, seed)
        if kind == "release":
            what, rid = r[1]
            (self.encoders if what == "enc" else self.states).pop(rid, None)
            return None
        raise ValueError(f"unknown inference request {kind!r}")

    def _encoder(self, eid: int, lookahead: str):
        from realtime.audio.streaming import StreamingAudioEncoder
        from realtime.visemes.windows import WINDOWS

        enc = self.encoders.get(eid)
        if enc is None:
            w = WINDOWS[lookahead]  # the viseme model's window: (4, 6) full, (8, 2) low
            enc = self.encoders[eid] = StreamingAudioEncoder(self.weights, fps=self.fps, extra_lookahead_ms=0,
                                                             block=(w.past, w.future))
            _bound(self.encoders)
        return enc


def _make_renderer(kind: str, lookahead: str):
    if kind == "diffusion":
        from realtime.render.diffusion import DiffusionRenderer  # needs a UNet checkpoint configured

        return DiffusionRenderer()
    from realtime.render.embedded import EmbeddedRenderer

    return EmbeddedRenderer(lookahead=lookahead)


def _bound(d: OrderedDict) -> None:
    while len(d) > MAX_STATES:
        d.popitem(last=False)


def _picklable(e: BaseException) -> bool:
    import pickle

    try:
        pickle.dumps(e)
        return True
    except Exception:
        return False

"""What runs inside the inference process (inference_process.py): the models, every session's
encoder and renderer state, and the serving of one wake-up's worth of requests."""

from __future__ import annotations

import logging
import os
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
        from realtime.server.config import DiffusionConfig
        from realtime.server.engine import RestFrameCache, make_renderer, whisper_path

        t = time.monotonic()
        torch.set_num_threads(1)  # few-row matmuls: extra intra-op threads only spin
        cv2.setNumThreads(1)
        self.fps = int(spec["fps"])
        self.avatar = Avatar.load(spec["avatar_dir"]) if spec.get("avatar_dir") else default_avatar()
        diffusion = DiffusionConfig(**spec["diffusion"]) if spec.get("diffusion") else None
        self.renderers = {la: make_renderer(spec["renderer"], la, diffusion) for la in ("full", "low")}
        # Whisper weights per look-ahead: the diffusion renderer's own checkpoint where it renders
        whisper = {la: whisper_path(spec["renderer"], la, diffusion) for la in ("full", "low")}
        loaded = {path: StreamingWeights(load_whisper(path)) for path in set(whisper.values())}
        self.weights = {la: loaded[whisper[la]] for la in ("full", "low")}
        self.encoders: OrderedDict[int, Any] = OrderedDict()
        self.states: OrderedDict[int, Any] = OrderedDict()
        self.rest_cache = RestFrameCache()
        for r in self.renderers.values():  # first calls are slow (allocations, lazy model loads)
            r.warm_up(self.avatar)
        self.load_s = time.monotonic() - t

    def describe(self) -> str:
        return f"models loaded in {self.load_s:.1f} s, nice {os.getpriority(os.PRIO_PROCESS, 0)}"

    def serve(self, requests: list[tuple[Any, tuple]]) -> Iterator[tuple[Any, tuple]]:
        """Answers as they are ready. Renders due before any push's own frames go first; then every
        encoder push in one batched call (they unblock the renders that follow); then renders,
        including those asked for with a push (``push_render``), earliest deadline first; then rest
        frames (prepared a slot or more ahead) and the rest."""
        from realtime.audio.streaming import push_many

        pushes = [(c, r) for c, r in requests if r[0] == "encode"]
        jobs = []  # (rank, deadline, seq, connection, thunk); connection None: a batch of answers
        batches: dict[str, list] = {}  # renders of a batching renderer (diffusion), by look-ahead
        for k, (c, r) in enumerate(requests):
            if r[0] == "render" and hasattr(self.renderers[r[2]], "render_batch"):
                batches.setdefault(r[2], []).append((k, c, r))
            elif r[0] != "encode":
                rank = {"render": 0, "rest": 1}.get(r[0], 2)
                jobs.append((rank, r[-1] if r[0] == "render" else 0.0, k, c, lambda r=r: ("ok", self._one(r))))
        for items in batches.values():  # one UNet batch for all sessions, due at the earliest deadline
            if len(items) == 1:
                k, c, r = items[0]
                jobs.append((0, r[-1], k, c, lambda r=r: ("ok", self._one(r))))
                continue
            first = min(items, key=lambda it: (it[2][-1], it[0]))
            jobs.append((0, first[2][-1], first[0], None, lambda items=items: self._render_batch(items)))
        first_fused = min((d for _, r in pushes if _spec(r) for *_, d in _spec(r)["frames"]), default=None)
        if first_fused is not None:
            jobs.sort(key=lambda j: j[:3])
            while jobs and jobs[0][0] == 0 and jobs[0][1] < first_fused:
                yield from self._answer([jobs.pop(0)])
        if pushes:
            try:
                items, pushed, results = [], [], []
                for k, (_, (_, eid, lookahead, samples, reset, light, *_)) in enumerate(pushes):
                    if not reset and eid not in self.encoders:
                        # this process was restarted (or let the state go): the session's frame grid
                        # must restart with a fresh encoder, not carry on from index 0 unawares
                        results.append(LookupError("the session's encoder is not in the inference process "
                                                   "(it was restarted); the encoder restarts"))
                        continue
                    enc = self._encoder(eid, lookahead)
                    if reset:
                        enc.reset()
                    enc.light = light
                    items.append((enc, samples))
                    pushed.append(k)
                    results.append(None)
                for k, res in zip(pushed, push_many(items) if items else []):
                    results[k] = res
            except Exception as e:  # a bug outside any one stream's call (push_many reports bad audio
                # and a stream's failed encoder call per stream, and retries a failed batch one by one)
                log.exception("batched encoder push failed")
                results = [RuntimeError(f"encoder failed: {type(e).__name__}: {e}")] * len(pushes)
                for _, r in pushes:  # their state is suspect: they start over
                    self.encoders.pop(r[1], None)
            for k, ((c, r), res) in enumerate(zip(pushes, results)):
                if isinstance(res, Exception):
                    yield c, ("error", res)
                    continue
                blocks = [(f.index, f.features.numpy()) for f in res]
                spec = _spec(r)
                if spec is None:
                    yield c, ("ok", blocks)
                else:
                    first = min(d for *_, d in spec["frames"])
                    jobs.append((0, first, -1 - k, c, lambda r=r, b=blocks: ("ok", (b, self._draw(r, b)))))
        jobs.sort(key=lambda j: j[:3])
        yield from self._answer(jobs)

    def _answer(self, jobs: list) -> Iterator[tuple[Any, tuple]]:
        for *_, c, thunk in jobs:
            if c is None:  # a batch: answers its requests itself
                yield from thunk()
                continue
            try:
                yield c, thunk()
            except Exception as e:  # delivered to the session that asked; this process carries on
                log.warning("inference request failed: %s", e)
                yield c, ("error", e if _picklable(e) else RuntimeError(f"{type(e).__name__}: {e}"))

    def _draw(self, r: tuple, blocks: list[tuple[int, Any]]) -> dict:
        """The frames a push asked for (``EncoderProxy.push_render``) that it produced and that can
        still make their deadline. A failure here loses no audio: the blocks go back either way and
        the session's render loop draws what is missing."""
        import numpy as np

        spec, have = _spec(r), dict(blocks)
        t, now = time.perf_counter(), time.monotonic()
        want = [(j, a) for j, a, deadline in spec["frames"] if j in have and now < deadline]
        frames: list = []
        if want:
            try:
                frames, _ = self._one(("render", spec["sid"], r[2], spec["seed"], np.array([a for _, a in want]),
                                       np.stack([have[j] for j, _ in want]), spec["quality"], 0.0))
            except Exception as e:
                log.warning("render with a push failed: %s", e)
                want, frames = [], []
        return {"frames": [(j, f) for (j, _), f in zip(want, frames)], "seconds": time.perf_counter() - t}

    def _render_batch(self, items: list[tuple[int, Any, tuple]]) -> Iterator[tuple[Any, tuple]]:
        """Several sessions' renders in one ``render_batch`` call (the diffusion renderer batches
        equal-length chunks into one UNet call). If the batch fails, each is rendered on its own,
        so one session's bad request fails only that session."""
        import numpy as np

        from realtime.render.diffusion import ChunkRequest

        try:
            reqs = [ChunkRequest(self.avatar, np.asarray(r[4]), r[5], self._state(r)) for _, _, r in items]
            chunks = self.renderers[items[0][2][2]].render_batch(reqs)
        except Exception as e:
            log.warning("batched render failed (%s); rendering each on its own", e)
            yield from self._answer([(0, 0.0, k, c, lambda r=r: ("ok", self._one(r))) for k, c, r in items])
            return
        for (_, c, _), chunk in zip(items, chunks):
            yield c, ("ok", (chunk.frames, chunk.events))

    def _state(self, r: tuple) -> Any:
        """The session's renderer state for render request ``r``, with the quality it asks for."""
        _, sid, lookahead, seed, _idx, _blocks, quality, _deadline = r
        state = self.states.get(sid)
        if state is None:
            state = self.states[sid] = self.renderers[lookahead].new_state(seed)
            _bound(self.states)
        state.data["quality"] = quality
        return state

    def _one(self, r: tuple) -> Any:
        import numpy as np

        kind = r[0]
        if kind == "render":
            state = self._state(r)
            chunk = self.renderers[r[2]].render_chunk(self.avatar, np.asarray(r[4]), r[5], state)
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
            enc = self.encoders[eid] = StreamingAudioEncoder(self.weights[lookahead], fps=self.fps, extra_lookahead_ms=0,
                                                             block=(w.past, w.future), catch_up=True)
            _bound(self.encoders)
        return enc


def set_nice(nice: int | None) -> None:
    """Gives this process the nice value ``nice`` if it may (lowering it needs CAP_SYS_NICE). On
    Linux a nice value is per thread: the threads already running (imports start some) are set one
    by one, and threads started later inherit it."""
    if nice is None:
        return
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:  # not Linux: the process
        tids = [0]
    try:
        for tid in tids:
            try:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
            except ProcessLookupError:  # that thread has ended
                pass
    except OSError as e:  # not permitted: same priority as the server, which still works
        log.info("inference process keeps nice %d (nice %d not permitted: %s); run with CAP_SYS_NICE "
                 "to let it win the CPU under load", os.getpriority(os.PRIO_PROCESS, 0), nice, e.strerror)


def _spec(r: tuple) -> dict | None:
    """The render request carried by an encoder push, if any."""
    return r[6] if r[0] == "encode" and len(r) > 6 else None


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

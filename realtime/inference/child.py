"""What runs inside the inference process (process.py): the models, every session's encoder and
renderer state, and the serving of one wake-up's worth of requests. Only that process imports this
module, so the models' libraries are imported at its top."""

from __future__ import annotations

import logging
import os
import pickle
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import torch

from realtime.audio.streaming import StreamingWeights, push_many
from realtime.audio.whisper_loader import load_whisper
from realtime.face.avatar import Avatar, default_avatar
from realtime.inference.factory import make_renderer, make_stream_encoder, whisper_path
from realtime.inference.messages import (Answer, ChildSpec, Drawn, EncodeAnswer, EncodeRequest, Failed, Released,
                                         ReleaseRequest, RenderAnswer, RenderRequest, Request, RestAnswer,
                                         RestRequest)
from realtime.inference.rest_cache import RestFrameCache
from realtime.render.base import BatchRenderer, ChunkRequest, RenderState

log = logging.getLogger(__name__)

MAX_STATES = 256  # per kind; a server that never released them (it crashed) cannot grow this process


class ChildAvatars:
    """The avatars renders name (``messages.avatar_key``: a prepared folder), loaded on first use
    (memory-mapped: milliseconds; the server prepared photos and videos before any session used
    them), at most ``max_loaded`` besides the default, least recently used dropped. Each keeps its
    own rest frames, dropped with it (``RestFrameCache`` keys avatars by ``id``, which a later
    avatar may reuse). One thread: the child serves its requests in turn."""

    def __init__(self, default: Avatar, max_loaded: int = 4) -> None:
        self.default, self.max_loaded = default, max_loaded
        self.default_rest = RestFrameCache()
        self._default_key = str(default.directory) if default.directory is not None else None
        self._loaded: OrderedDict[str, tuple[Avatar, RestFrameCache]] = OrderedDict()

    def get(self, key: str | None) -> tuple[Avatar, RestFrameCache]:
        """The avatar of ``key`` and its rest frames (None, or the default's folder: the default)."""
        if key is None or key == self._default_key:
            return self.default, self.default_rest
        hit = self._loaded.get(key)
        if hit is None:
            hit = self._loaded[key] = (Avatar.load(key), RestFrameCache())
            log.info("avatar %s loaded (%d kept besides the default)", key, len(self._loaded))
            while len(self._loaded) > self.max_loaded:
                self._loaded.popitem(last=False)
        self._loaded.move_to_end(key)
        return hit

    def avatar(self, key: str | None) -> Avatar:
        return self.get(key)[0]

    def keys(self) -> list[str]:
        """Folders kept besides the default, least recently used first."""
        return list(self._loaded)


class ChildEngine:
    def __init__(self, spec: ChildSpec) -> None:
        t = time.monotonic()
        torch.set_num_threads(1)  # few-row matmuls: extra intra-op threads only spin
        cv2.setNumThreads(1)
        self.fps = spec.fps
        self.avatar = Avatar.load(spec.avatar_dir) if spec.avatar_dir else default_avatar()
        self.avatars = ChildAvatars(self.avatar, spec.max_avatars)
        diffusion = spec.diffusion
        self.renderers = {la: make_renderer(spec.renderer, la, diffusion) for la in ("full", "low")}
        # Whisper weights per look-ahead: the diffusion renderer's own checkpoint where it renders
        whisper = {la: whisper_path(spec.renderer, la, diffusion) for la in ("full", "low")}
        loaded = {path: StreamingWeights(load_whisper(path)) for path in set(whisper.values())}
        self.weights = {la: loaded[whisper[la]] for la in ("full", "low")}
        self.encoders: OrderedDict[int, Any] = OrderedDict()
        self.states: OrderedDict[int, RenderState] = OrderedDict()
        for r in self.renderers.values():  # first calls are slow (allocations, lazy model loads)
            r.warm_up(self.avatar)
        self.load_s = time.monotonic() - t

    def describe(self) -> str:
        return f"models loaded in {self.load_s:.1f} s, nice {os.getpriority(os.PRIO_PROCESS, 0)}"

    def serve(self, requests: list[tuple[Any, Request]]) -> Iterator[tuple[Any, Answer]]:
        """Answers as they are ready. Renders due before any push's own frames go first; then every
        encoder push in one batched call (they unblock the renders that follow); then renders,
        including those asked for with a push (``EncodeRequest.draw``), earliest deadline first;
        then rest frames (prepared a slot or more ahead) and releases."""
        pushes = [(c, r) for c, r in requests if isinstance(r, EncodeRequest)]
        jobs: list[_Job] = []
        batches: dict[str, list[tuple[int, Any, RenderRequest]]] = {}  # a batching renderer's, by look-ahead
        for k, (c, r) in enumerate(requests):
            if isinstance(r, RenderRequest) and isinstance(self.renderers[r.lookahead], BatchRenderer):
                batches.setdefault(r.lookahead, []).append((k, c, r))
            elif isinstance(r, RenderRequest):
                jobs.append(_Job(0, r.deadline, k, c, lambda r=r: self._render(r)))
            elif isinstance(r, RestRequest):
                jobs.append(_Job(1, 0.0, k, c, lambda r=r: self._rest(r)))
            elif not isinstance(r, EncodeRequest):
                jobs.append(_Job(2, 0.0, k, c, lambda r=r: self._other(r)))
        for items in batches.values():  # one UNet batch for all sessions, due at the earliest deadline
            if len(items) == 1:
                k, c, r = items[0]
                jobs.append(_Job(0, r.deadline, k, c, lambda r=r: self._render(r)))
                continue
            k, _, first = min(items, key=lambda it: (it[2].deadline, it[0]))
            jobs.append(_Job(0, first.deadline, k, None, lambda items=items: self._render_batch(items)))
        first_fused = min((r.draw.first_deadline for _, r in pushes if r.draw), default=None)
        if first_fused is not None:
            jobs.sort()
            while jobs and jobs[0].rank == 0 and jobs[0].deadline < first_fused:
                yield from self._answer([jobs.pop(0)])
        results = self._push_all([r for _, r in pushes])
        for k, ((c, r), res) in enumerate(zip(pushes, results)):
            if isinstance(res, Exception):
                yield c, Failed(res)
                continue
            blocks = tuple((f.index, f.features.numpy()) for f in res)
            if r.draw is None:
                yield c, EncodeAnswer(blocks)
            else:
                jobs.append(_Job(0, r.draw.first_deadline, -1 - k, c,
                                 lambda r=r, b=blocks: EncodeAnswer(b, self._draw(r, b))))
        jobs.sort()
        yield from self._answer(jobs)

    def _push_all(self, pushes: list[EncodeRequest]) -> list[Any]:
        """Every session's audio through one batched encoder call: per push, its frames or the
        exception that push gets."""
        results: list[Any] = []
        try:
            items, pushed = [], []
            for k, r in enumerate(pushes):
                if not r.reset and r.encoder_id not in self.encoders:
                    # this process was restarted (or let the state go): the session's frame grid
                    # must restart with a fresh encoder, not carry on from index 0 unawares
                    results.append(LookupError("the session's encoder is not in the inference process "
                                               "(it was restarted); the encoder restarts"))
                    continue
                enc = self._encoder(r.encoder_id, r.lookahead)
                if r.reset:
                    enc.reset()
                enc.light = r.light
                items.append((enc, r.samples))
                pushed.append(k)
                results.append(None)
            for k, res in zip(pushed, push_many(items) if items else []):
                results[k] = res
        except Exception as e:  # a bug outside any one stream's call (push_many reports bad audio
            # and a stream's failed encoder call per stream, and retries a failed batch one by one)
            log.exception("batched encoder push failed")
            results = [RuntimeError(f"encoder failed: {type(e).__name__}: {e}")] * len(pushes)
            for r in pushes:  # their state is suspect: they start over
                self.encoders.pop(r.encoder_id, None)
        return results

    def _answer(self, jobs: list[_Job]) -> Iterator[tuple[Any, Answer]]:
        for job in jobs:
            if job.conn is None:  # a batch: answers its requests itself
                yield from job.run()
                continue
            try:
                yield job.conn, job.run()
            except Exception as e:  # delivered to the session that asked; this process carries on
                log.warning("inference request failed: %s", e)
                yield job.conn, Failed(e if _picklable(e) else RuntimeError(f"{type(e).__name__}: {e}"))

    def _draw(self, r: EncodeRequest, blocks: tuple[tuple[int, np.ndarray], ...]) -> Drawn:
        """The frames a push asked for (``EncodeRequest.draw``) that it produced and that can still
        make their deadline. A failure here loses no audio: the blocks go back either way and the
        session's render loop draws what is missing."""
        draw, have = r.draw, dict(blocks)
        t, now = time.perf_counter(), time.monotonic()
        want = [f for f in draw.frames if f.encoder_index in have and now < f.deadline]
        frames: tuple[np.ndarray, ...] = ()
        events: tuple[Any, ...] = ()
        if want:
            try:
                answer = self._render(RenderRequest(
                    draw.state_id, r.lookahead, draw.seed, np.array([f.avatar_index for f in want]),
                    np.stack([have[f.encoder_index] for f in want]), draw.quality, avatar=draw.avatar))
                frames, events = answer.frames, answer.events
            except Exception as e:
                log.warning("render with a push failed: %s", e)
                want, frames = [], ()
        return Drawn(tuple((f.encoder_index, img, ev) for f, img, ev in zip(want, frames, events)),
                     time.perf_counter() - t)

    def _render_batch(self, items: list[tuple[int, Any, RenderRequest]]) -> Iterator[tuple[Any, Answer]]:
        """Several sessions' renders in one ``render_batch`` call (the diffusion renderer batches
        equal-length chunks into one UNet call). If the batch fails, each is rendered on its own,
        so one session's bad request fails only that session."""
        try:
            reqs = [ChunkRequest(self.avatars.avatar(r.avatar), np.asarray(r.frame_indices), r.audio_blocks,
                                 self._state(r)) for _, _, r in items]
            chunks = self.renderers[items[0][2].lookahead].render_batch(reqs)
        except Exception as e:
            log.warning("batched render failed (%s); rendering each on its own", e)
            yield from self._answer([_Job(0, 0.0, k, c, lambda r=r: self._render(r)) for k, c, r in items])
            return
        for (_, c, _), chunk in zip(items, chunks):
            yield c, RenderAnswer(tuple(chunk.frames), tuple(chunk.frame_events()))

    def _state(self, r: RenderRequest) -> RenderState:
        """The session's renderer state for ``r``, with the quality it asks for."""
        state = self.states.get(r.state_id)
        if state is None:
            state = self.states[r.state_id] = self.renderers[r.lookahead].new_state(r.seed)
            _bound(self.states)
        state.quality = r.quality
        return state

    def _render(self, r: RenderRequest) -> RenderAnswer:
        chunk = self.renderers[r.lookahead].render_chunk(self.avatars.avatar(r.avatar), np.asarray(r.frame_indices),
                                                         r.audio_blocks, self._state(r))
        return RenderAnswer(tuple(chunk.frames), tuple(chunk.frame_events()))

    def _rest(self, r: RestRequest) -> RestAnswer:
        avatar, rest = self.avatars.get(r.avatar)
        return RestAnswer(rest.get(self.renderers[r.lookahead], avatar, r.frame_index, r.seed))

    def _other(self, r: Request) -> Answer:
        if isinstance(r, ReleaseRequest):
            (self.encoders if r.kind == "encoder" else self.states).pop(r.id, None)
            return Released()
        raise ValueError(f"unknown inference request {type(r).__name__}")

    def _encoder(self, eid: int, lookahead: str) -> Any:
        enc = self.encoders.get(eid)
        if enc is None:
            enc = self.encoders[eid] = make_stream_encoder(self.weights[lookahead], lookahead, self.fps)
            _bound(self.encoders)
        return enc


@dataclass(order=True)
class _Job:
    """One answer to produce: ordered by rank (0 render, 1 rest, 2 other), deadline, arrival."""

    rank: int
    deadline: float
    seq: int
    conn: Any = field(compare=False)  # None: a batch, which answers its requests itself
    run: Callable[[], Any] = field(compare=False)


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


def _bound(d: OrderedDict) -> None:
    while len(d) > MAX_STATES:
        d.popitem(last=False)


def _picklable(e: BaseException) -> bool:
    try:
        pickle.dumps(e)
        return True
    except Exception:
        return False

"""The diffusion renderer behind the server: configuration, fewer steps when degraded, one batch
for several sessions' renders in the inference process, and a live session rendering with it. A
tiny random-init UNet and VAE written to files stand in for LatentSync's checkpoints."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from realtime.config import ConfigError
from realtime.server.config import DiffusionConfig, RealtimeConfig, load_realtime_config


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    from realtime.bench.random_weights import write_random_diffusion

    return write_random_diffusion("tiny", tmp_path_factory.mktemp("diffusion"), seed=3)


def test_diffusion_needs_its_files_and_flags_can_complete_the_file(tmp_path, tiny_files):
    with pytest.raises(ConfigError, match=r"diffusion\.unet.*diffusion\.vae.*--unet and --vae"):
        RealtimeConfig(renderer="diffusion")
    with pytest.raises(ConfigError, match="low_quality_steps"):
        DiffusionConfig(steps=2, low_quality_steps=3)
    path = tmp_path / "rt.yaml"
    path.write_text("renderer: diffusion\ndiffusion:\n  steps: 3\n")
    with pytest.raises(ConfigError, match=r"diffusion\.unet"):
        load_realtime_config(path)
    cfg = load_realtime_config(path, {"diffusion": {"unet": tiny_files["unet"], "vae": tiny_files["vae"]}})
    assert cfg.renderer == "diffusion" and cfg.diffusion.steps == 3  # the file's keys are kept
    assert cfg.diffusion.unet == tiny_files["unet"]


def test_serve_without_unet_is_a_one_line_error(capsys):
    from realtime.cli import main

    assert main(["serve", "--renderer", "diffusion", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "syncvid serve: error:" in err and "diffusion.unet" in err and "Traceback" not in err


def test_serve_with_missing_or_broken_files_is_a_one_line_error(tmp_path, tiny_files, capsys):
    from realtime.cli import main

    assert main(["serve", "--unet", str(tmp_path / "nope.pt"), "--vae", tiny_files["vae"], "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "diffusion.unet / --unet" in err and "nope.pt" in err and "Traceback" not in err
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    # found, but not a checkpoint: the inference process fails to load it and says why
    assert main(["serve", "--unet", str(broken), "--unet-config", tiny_files["unet_config"],
                 "--vae", tiny_files["vae"], "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "inference process failed to start" in err and "broken.pt" in err and "Traceback" not in err


def test_make_renderer_builds_diffusion_for_full_and_embedded_for_low(tiny_files):
    from realtime.inference.factory import make_renderer, whisper_path
    from realtime.render.diffusion import DiffusionRenderer
    from realtime.render.embedded import EmbeddedRenderer

    d = DiffusionConfig(**tiny_files, steps=3, low_quality_steps=1, device="cpu", whisper="w.pt")
    full = make_renderer("diffusion", "full", d)
    assert isinstance(full, DiffusionRenderer)
    assert full.sampler.steps == 3 and full.low_quality_steps == 1 and full.device.type == "cpu"
    assert full.fallback is None  # its sessions get another Whisper's features: no viseme fallback
    plain = make_renderer("diffusion", "full", DiffusionConfig(**tiny_files, device="cpu"))
    assert isinstance(plain.fallback, EmbeddedRenderer) and plain.fallback.idle is False
    assert plain.sampler.steps == 4 and plain.low_quality_steps == 2  # the defaults
    assert isinstance(make_renderer("diffusion", "low", d), EmbeddedRenderer)
    assert isinstance(make_renderer("embedded", "full", d), EmbeddedRenderer)
    # features from the diffusion renderer's own Whisper only where it renders
    assert whisper_path("diffusion", "full", d) == "w.pt"
    assert whisper_path("diffusion", "low", d) is None and whisper_path("embedded", "full", d) is None


def test_degraded_sessions_sample_fewer_steps_in_their_own_group():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "render"))
    from diffusion_fixtures import PerFrameUNet, TinyAvatar, audio_blocks

    from models.vae import tiny_autoencoder_kl
    from realtime.render.base import ChunkRequest
    from realtime.render.diffusion import DiffusionRenderer
    from realtime.render.samplers import SamplerConfig

    r = DiffusionRenderer(PerFrameUNet(), tiny_autoencoder_kl(), SamplerConfig(steps=4, guidance=1.5))
    r.low_quality_steps = 2
    avatar = TinyAvatar(resolution=64)
    full, low = r.new_state(1), r.new_state(2)
    low.quality = "low"
    idx = np.arange(2)
    out = r.render_batch([ChunkRequest(avatar, idx, audio_blocks(2), full),
                          ChunkRequest(avatar, idx, audio_blocks(2), low)])
    # two groups: 4 UNet calls for the full-quality session, then 2 for the degraded one
    assert [c["shape"][0] for c in r.unet.calls] == [2] * 6  # CFG doubles each batch of one
    assert [int(c["t"]) for c in r.unet.calls[:4]] == [999, 749, 499, 249]
    assert [int(c["t"]) for c in r.unet.calls[4:]] == [999, 499]
    assert len(out) == 2 and all(len(o.frames) == 2 for o in out)
    assert r.new_state(0).cuda_stream is None  # on CPU no CUDA stream


def test_top_level_hands_frames_to_the_lighter_renderer():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "render"))
    from diffusion_fixtures import PerFrameUNet, TinyAvatar, audio_blocks

    from models.vae import tiny_autoencoder_kl
    from realtime.render.base import ChunkRequest, RenderedChunk
    from realtime.render.diffusion import DiffusionRenderer
    from realtime.render.samplers import SamplerConfig
    from realtime.session.config import THIN_LEVEL, quality_for

    assert [quality_for(level) for level in range(THIN_LEVEL + 1)] == ["full", "full", "low", "lighter"]

    class Lighter:  # records what it is asked to draw; marks its frames
        def __init__(self):
            self.calls, self.states = [], []

        def new_state(self, seed):
            self.states.append(seed)
            return {"seed": seed}

        def render_chunk(self, avatar, idx, blocks, state):
            self.calls.append((list(idx), blocks.shape, state["seed"]))
            return RenderedChunk([np.full((80, 96, 3), 7, np.uint8) for _ in idx], [{"light": True}] * len(idx))

    r = DiffusionRenderer(PerFrameUNet(), tiny_autoencoder_kl(), SamplerConfig(steps=2, guidance=1.5))
    r.fallback = Lighter()
    avatar = TinyAvatar(resolution=64)
    heavy, light = r.new_state(1), r.new_state(2)
    light.quality = "lighter"
    out = r.render_batch([ChunkRequest(avatar, np.arange(2), audio_blocks(2), heavy),
                          ChunkRequest(avatar, np.arange(2, 5), audio_blocks(3), light)])
    assert r.fallback.calls == [([2, 3, 4], (3, 50, 384), 2)]
    assert len(r.unet.calls) == 2 and r.unet.calls[0]["shape"][2] == 2  # only the other session's frames
    assert all(np.all(f == 7) for f in out[1].frames) and not np.all(out[0].frames[0] == 7)
    r.render_batch([ChunkRequest(avatar, np.arange(5, 6), audio_blocks(1), light)])
    assert r.fallback.states == [2]  # the session keeps its lighter renderer's state across chunks


def test_inference_process_batches_sessions_renders(tiny_files):
    from realtime.inference.child import ChildEngine
    from realtime.inference.messages import (
        ChildSpec,
        Failed,
        RenderAnswer,
        RenderRequest,
    )
    from realtime.render.base import BatchRenderer

    spec = ChildSpec(None, "diffusion", 25, None, DiffusionConfig(**tiny_files, steps=2, low_quality_steps=1,
                                                                 device="cpu"))
    engine = ChildEngine(spec)
    diff = engine.renderers["full"]
    calls = []
    orig = diff.render_batch
    diff.render_batch = lambda reqs: calls.append(len(reqs)) or orig(reqs)
    blocks = np.random.default_rng(0).standard_normal((2, 50, 384)).astype(np.float32)
    now = time.monotonic()
    reqs = [(f"c{k}", RenderRequest(100 + k, "full", k, np.array([0, 1]), blocks, "full", now + 0.1 * k))
            for k in range(3)]
    reqs.append(("bad", RenderRequest(200, "full", 0, np.array([0, 1]), blocks[:1], "full", now)))
    answers = dict(engine.serve(reqs))
    assert calls[0] == 4  # one call for the four sessions; it failed on the bad one ...
    assert set(answers) == {"c0", "c1", "c2", "bad"}  # ... and each was then answered on its own
    assert isinstance(answers["bad"], Failed)
    for k in range(3):
        answer = answers[f"c{k}"]
        assert isinstance(answer, RenderAnswer)
        assert len(answer.frames) == 2 and answer.frames[0].shape == engine.avatar.frame(0).shape
    calls.clear()
    answers = dict(engine.serve(reqs[:3]))
    assert calls == [3] and all(isinstance(a, RenderAnswer) for a in answers.values())
    # the low-latency sessions of a diffusion server render with the embedded renderer, one by one
    assert not isinstance(engine.renderers["low"], BatchRenderer)


async def test_live_session_renders_with_diffusion(tiny_files):
    from clients.webrtc_peer import WebRTCPeer
    from realtime.server.app import RealtimeServer
    from realtime.server.engine import build_engine
    from tests.fakes import make_config, speech_like

    d = DiffusionConfig(**tiny_files, steps=1, low_quality_steps=1, guidance=1.0, device="cpu")
    config = make_config(renderer="diffusion", diffusion=d, inference="thread", inference_threads=1,
                         latency_budget_ms=400.0, max_chunk=2)
    engine = build_engine(config)
    assert engine.renderer("full").name == "diffusion"
    unet = engine.renderer("full").unet
    calls = []
    unet.register_forward_hook(lambda m, a, o: calls.append(1))
    lighter = engine.renderer("full").fallback
    light_calls = []
    orig_light = lighter.render_chunk
    lighter.render_chunk = lambda *a: light_calls.append(len(a[1])) or orig_light(*a)
    async with RealtimeServer(config, engine) as server:
        peer = WebRTCPeer(f"ws://127.0.0.1:{server.port}/ws")
        await peer.connect()
        await peer.wait_connected()
        await asyncio.sleep(0.5)
        peer.play(speech_like(2.0))
        n0, t0 = len(peer.video_times), time.monotonic()
        await asyncio.sleep(2.5)
        fps = (len(peer.video_times) - n0) / (time.monotonic() - t0)
        sched = next(iter(server.sessions)).live
        # The tiny UNet and VAE take ~90 ms a frame on this CPU at the default avatar's 256 px
        # crops, far from real time: frames keep flowing at 25 fps all the same, the session
        # degrades, and the frames that can make their deadline are drawn by the diffusion path.
        assert 22.0 <= fps <= 27.5, fps
        assert sched.counts["speech"] >= 3 and len(calls) >= 3, (sched.counts, len(calls))
        assert sched.counts["late"] + sched.counts["repeat"] > 0, sched.counts
        # it reached the top level, where the embedded renderer drew its frames
        assert light_calls, (sched.level, sched.counts)
        await peer.close()
    engine.close()

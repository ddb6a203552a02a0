"""LatentSync's diffusion rendering path behind the common ``Renderer`` interface.

Numerics follow LatentSync's ``LipsyncPipeline`` (see docs/diffusion.md for the differences):
- aligned face crops at R (256 or 512) in [-1, 1]; the keep-mask (1 = keep, 0 = repaint) at R;
- UNet input, 13 channels in this order: scheduler-scaled noisy latents (4), the mask resized
  (nearest) to latent size (1), masked-image latents (4), reference latents = same frame unmasked (4);
- one noise tensor (1, 4, 1, h, w) per seed repeated over frames; CFG with all-zero audio;
- decode, then only the mouth is replaced: ``decoded * (1 - mask) + reference * mask``; then
  ``(x / 2 + 0.5).clamp(0, 1) * 255`` truncated to uint8, and pasted back into the avatar frame.

Streaming == offline: a frame's noise depends only on the seed (``samplers``), the VAE latents use
the posterior mean, so a frame is rendered identically whatever chunk it falls in, exactly so for
UNets without temporal layers (v1.0, per-frame models) and, for UNets with motion modules (which
attend across the frames of one call), whenever the chunk boundaries are the same (the offline
pipeline cuts chunks at multiples of the chunk length, as a stream with that chunk length does).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import inspect
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from models.vae import decode_latents, encode_latents, vae_scale_factor
from realtime.errors import WeightsError
from realtime.face.mask import fixed_mask
from realtime.render.base import ChunkRequest, FrameEvent, RenderedChunk, Renderer, RenderState, check_chunk
from realtime.render.samplers import SamplerConfig, initial_noise, sample_latents
from realtime.render.vae_loader import load_vae
from realtime.unet_loader import load_unet


if TYPE_CHECKING:  # renderers read the whole face track; the avatar module is imported by its users
    from realtime.face.avatar import Avatar

log = logging.getLogger(__name__)

LATENT_CACHE_FRAMES = 2048  # reference + masked latents of this many distinct crops (~64 KB each at 256)


@dataclass
class DiffusionState(RenderState):
    cuda_stream: Any = None  # on CUDA each session's work runs on its own stream
    fallback: RenderState | None = None  # the lighter renderer's state for this session (quality "lighter")


def _unet_sample(out: Any) -> torch.Tensor:
    return out if isinstance(out, torch.Tensor) else (out.sample if hasattr(out, "sample") else out[0])


class DiffusionRenderer(Renderer):
    """UNet + VAE + sampler. ``unet`` and ``vae`` are modules already on ``device`` in ``dtype``."""

    name = "diffusion"

    def __init__(
        self,
        unet: torch.nn.Module | None = None,
        vae: torch.nn.Module | None = None,
        sampler: SamplerConfig | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        use_avatar_latents: bool = True,
    ):
        if unet is None or vae is None:
            raise WeightsError("the diffusion renderer needs LatentSync's UNet checkpoint and a VAE: build it with "
                               "DiffusionRenderer.from_files(unet_ckpt, unet_yaml, vae_dir) (CLI: --unet, --config, --vae)")
        self.unet = unet.eval()
        self.use_avatar_latents = use_avatar_latents
        self.vae = vae.eval()
        self.sampler = sampler or SamplerConfig()
        self.device = torch.device(device)
        # fp16 on CUDA (LatentSync's weight_dtype), fp32 on CPU where half math is slow or missing.
        self.dtype = dtype or (torch.float16 if self.device.type == "cuda" else torch.float32)
        self.scale = vae_scale_factor(vae)
        self._latent_cache: OrderedDict[bytes, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._lock = threading.Lock()  # the cache is shared by the worker threads of several sessions
        self._deep_cache_meta: dict[str, bool] = {}
        self.low_quality_steps: int | None = None  # steps for sessions degraded to quality "low"
        self.fallback: Renderer | None = None  # renders sessions degraded to quality "lighter"

    @classmethod
    def from_files(cls, unet_ckpt: str, unet_config: str, vae_dir: str | None, sampler: SamplerConfig | None = None,
                   device: str | None = None) -> "DiffusionRenderer":
        """LatentSync's UNet checkpoint + its YAML + a local VAE folder; fp16 on CUDA, fp32 on CPU."""
        if not vae_dir:
            raise WeightsError(
                f"the UNet checkpoint {unet_ckpt} needs a VAE: pass --vae DIR, a local diffusers-format folder "
                "of stabilityai/sd-vae-ft-mse (or madebyollin/taesd); nothing is downloaded")
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.float16 if torch.device(device).type == "cuda" else torch.float32
        vae = load_vae(vae_dir, device=device, dtype=dtype)  # fails fast, before the 5 GB UNet
        unet = load_unet(unet_ckpt, unet_config, device=device, dtype=dtype)
        return cls(unet, vae, sampler, device=device, dtype=dtype)

    # ---- Renderer interface -------------------------------------------------------------------

    def new_state(self, seed: int = 0) -> RenderState:
        """On CUDA a session's work runs on its own stream (``render_batch``)."""
        stream = torch.cuda.Stream(device=self.device) if self.device.type == "cuda" else None
        return DiffusionState(seed=int(seed), cuda_stream=stream)

    def render_chunk(self, avatar, frame_indices, audio_blocks, state) -> RenderedChunk:
        return self.render_batch([ChunkRequest(avatar, frame_indices, audio_blocks, state)])[0]

    def render_batch(self, requests: Sequence[ChunkRequest]) -> list[RenderedChunk]:
        """Renders several sessions' chunks; chunks of equal length, crop size and quality share one
        UNet batch. On CUDA every group is launched on its first session's stream before any is
        waited for, so groups of different sessions overlap on the GPU."""
        results: list[RenderedChunk | None] = [None] * len(requests)
        work: list[tuple[int, np.ndarray]] = []  # (request index, positions of frames with a face)
        for k, req in enumerate(requests):
            idx = np.asarray(req.frame_indices, dtype=np.int64)
            check_chunk(idx, np.asarray(req.audio_blocks))
            if self.fallback is not None and req.state.quality == "lighter":
                results[k] = self._render_lighter(req)
                continue
            faces = np.array([p for p, i in enumerate(idx) if req.avatar.has_face(int(i))], dtype=np.int64)
            # Frames without a detectable face pass through unchanged (counted by the caller's metrics).
            results[k] = RenderedChunk(frames=[np.array(req.avatar.frame(int(i))) for i in idx],
                                       events=[FrameEvent(int(i), face=bool(p in set(faces.tolist())))
                                               for p, i in enumerate(idx)])
            if len(faces):
                work.append((k, faces))
        groups: dict[tuple[int, int, int], list[tuple[int, np.ndarray]]] = {}  # by (frames, crop size, steps)
        for k, faces in work:
            r = int(requests[k].avatar.crop(int(np.asarray(requests[k].frame_indices)[faces[0]])).shape[0])
            groups.setdefault((len(faces), r, self._steps_for(requests[k].state)), []).append((k, faces))
        launched = []
        for (_, _, steps), items in groups.items():
            crops, audios, seeds, masks, stored = [], [], [], [], []
            for k, faces in items:
                req = requests[k]
                idx = np.asarray(req.frame_indices, dtype=np.int64)[faces]
                crops.append(np.stack([req.avatar.crop(int(i)) for i in idx]))
                stored.append(np.stack([req.avatar.latents(int(i)) for i in idx])
                              if self._can_use_stored_latents(req.avatar) else None)
                audios.append(np.asarray(req.audio_blocks, dtype=np.float32)[faces])
                seeds.append(req.state.seed)
                masks.append(_avatar_mask(req.avatar, crops[-1].shape[1]))
            sampler = self.sampler if steps == self.sampler.steps else dataclasses.replace(self.sampler, steps=steps)
            first_state = requests[items[0][0]].state
            with _on_stream(first_state.cuda_stream if isinstance(first_state, DiffusionState) else None):
                launched.append((items, self._launch(crops, audios, seeds, masks, stored, sampler)))
        for items, pending in launched:
            for (k, faces), new_crops in zip(items, self._finish(pending)):
                req = requests[k]
                idx = np.asarray(req.frame_indices, dtype=np.int64)
                for p, crop in zip(faces, new_crops):
                    results[k].frames[p] = req.avatar.paste_back(int(idx[p]), crop)
        return results  # type: ignore[return-value]

    def _render_lighter(self, req: ChunkRequest) -> RenderedChunk:
        """A session at the top degradation level: its frames from the lighter ``fallback``
        renderer (the embedded one without idle motion, so the frame around the mouth stays the
        avatar's, as in this renderer's frames), with that renderer's own state for the session."""
        state = req.state.fallback
        if state is None:
            state = req.state.fallback = self.fallback.new_state(req.state.seed)
        return self.fallback.render_chunk(req.avatar, req.frame_indices, req.audio_blocks, state)

    def _steps_for(self, state: RenderState) -> int:
        """Sampling steps for a session: fewer while its scheduler has degraded it (quality "low")."""
        if state.quality == "low" and self.low_quality_steps:
            return min(self.sampler.steps, self.low_quality_steps)
        return self.sampler.steps

    def warm_up(self, avatar: Avatar) -> None:
        """One chunk through the whole path (allocations, cuDNN algorithm choice) before any session."""
        block = np.zeros((1, 50, 384), np.float32)
        self.render_chunk(avatar, np.array([0]), block, self.new_state(0))
        if self.fallback is not None:
            self.fallback.warm_up(avatar)

    # ---- avatar-free core ---------------------------------------------------------------------

    @torch.no_grad()
    def render_crops(
        self,
        crops: Sequence[np.ndarray],
        audio: Sequence[np.ndarray],
        seeds: Sequence[int],
        masks: Sequence[np.ndarray] | None = None,
        latents: Sequence[np.ndarray | None] | None = None,
    ) -> list[np.ndarray]:
        """B chunks of aligned crops (F, R, R, 3) uint8 + audio (F, S, 384) -> new crops (F, R, R, 3) uint8.

        All chunks must share F and R. ``masks``: (R, R) keep-masks (default LatentSync's mask at R).
        ``latents``: per chunk, optional precomputed (F, 2, 4, R/8, R/8) [reference, masked] latents
        (an avatar prepared with the same VAE); otherwise they are encoded here (and cached).
        """
        return self._finish(self._launch(crops, audio, seeds, masks, latents, self.sampler))

    @torch.no_grad()
    def _launch(self, crops, audio, seeds, masks, latents, sampler: SamplerConfig) -> tuple:
        """Queues ``render_crops``' device work on the current stream; ``_finish`` waits for it.
        On CPU everything happens here."""
        b = len(crops)
        f, r = crops[0].shape[0], crops[0].shape[1]
        assert all(c.shape == (f, r, r, 3) for c in crops), "all chunks must be (F, R, R, 3) with one F and R"
        assert r % self.scale == 0, f"crop size {r} must be a multiple of {self.scale}"
        h = r // self.scale
        masks = masks if masks is not None else [fixed_mask(r)] * b
        dev, dt = self.device, self.dtype
        pixels = [torch.from_numpy(np.ascontiguousarray(c)).permute(0, 3, 1, 2).float() / 127.5 - 1.0 for c in crops]
        mask_t = [torch.from_numpy(np.array(m, dtype=np.float32))[None, None] for m in masks]  # (1, 1, R, R)

        cond, refs = [], []
        latents = latents if latents is not None else [None] * b
        for c, px, m, lat in zip(crops, pixels, mask_t, latents):
            if lat is not None:
                lat_t = torch.from_numpy(np.asarray(lat, np.float32)).to(dev, dt)
                ref_lat, masked_lat = lat_t[:, 0], lat_t[:, 1]
            else:
                ref_lat, masked_lat = self._frame_latents(c, px, m)  # (F, 4, h, w) each
            mask_lat = F.interpolate(m, size=(h, h)).expand(f, 1, h, h)  # nearest, as LatentSync
            chunk = torch.cat([mask_lat.to(dev, dt), masked_lat, ref_lat], dim=1)  # (F, 9, h, w)
            cond.append(rearrange(chunk, "f c h w -> c f h w"))
            refs.append(px)
        conditioning = torch.stack(cond)  # (B, 9, F, h, w)
        noise = torch.cat([initial_noise(s, (h, h), f) for s in seeds]).to(dev, dt)  # (B, 4, F, h, w)
        audio_t = torch.from_numpy(np.stack([np.asarray(a, np.float32) for a in audio])).to(dev, dt)
        deep_cache: dict[str, torch.Tensor] = {}  # features of the last full UNet pass, this call only
        denoise = lambda x, t, a, reuse: self._denoise(x, t, a, reuse, deep_cache)  # noqa: E731
        latents = sample_latents(denoise, noise, conditioning, audio_t, sampler, list(seeds))
        decoded = decode_latents(self.vae, rearrange(latents, "b c f h w -> (b f) c h w")).float()
        done = None
        if decoded.device.type == "cuda":  # copy into pinned memory without blocking the host
            decoded = _to_host_async(decoded)
            done = torch.cuda.Event()
            done.record()
        return decoded, done, mask_t, refs, b

    @staticmethod
    def _finish(pending: tuple) -> list[np.ndarray]:
        decoded, done, mask_t, refs, b = pending
        if done is not None:
            done.synchronize()
        decoded = rearrange(decoded, "(b f) c h w -> b f c h w", b=b)
        out = []
        for k in range(b):
            keep = mask_t[k][0]  # (1, R, R)
            mixed = decoded[k] * (1 - keep) + refs[k] * keep
            img = ((mixed / 2 + 0.5).clamp(0, 1) * 255).to(torch.uint8)  # truncation, as LatentSync
            out.append(img.permute(0, 2, 3, 1).numpy())
        return out

    def _can_use_stored_latents(self, avatar: Avatar) -> bool:
        """Latents stored in an avatar directory are used when they come from the same kind of VAE
        with the same scaling (``prepare-avatar --vae``); otherwise they are encoded here."""
        if not self.use_avatar_latents or not getattr(avatar, "has_latents", False):
            return False
        info = getattr(getattr(avatar, "meta", None), "latents", None) or {}
        same = (info.get("vae") == type(self.vae).__name__
                and abs(float(info.get("scaling_factor", -1)) - float(self.vae.config.scaling_factor)) < 1e-9
                and info.get("order", ["reference", "masked"]) == ["reference", "masked"])
        if not same:
            log.debug("avatar latents %s do not match the renderer's VAE; encoding the crops instead", info)
        return same

    def _denoise(self, x: torch.Tensor, t: torch.Tensor, audio: torch.Tensor, reuse_deep: bool,
                 deep_cache: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.sampler.deep_cache_interval > 1 and self._supports_deep_cache():
            # The UNet's own DeepCache hook (models.unet): a full pass returns the activation entering
            # the last up block's branch 0; a shallow pass reuses it (LatentSync ships branch 0).
            cached = deep_cache.get("features") if reuse_deep else None
            out = self.unet(x, t, encoder_hidden_states=audio, cache_branch_id=0, deep_cache=cached)
            if cached is None:
                deep_cache["features"] = out.deep_cache
            return out.sample
        return _unet_sample(self.unet(x, t, encoder_hidden_states=audio))

    def _supports_deep_cache(self) -> bool:
        if "supports" not in self._deep_cache_meta:
            params = inspect.signature(self.unet.forward).parameters
            self._deep_cache_meta["supports"] = "cache_branch_id" in params and "deep_cache" in params
            if not self._deep_cache_meta["supports"]:
                log.warning("this UNet has no DeepCache hook; deep_cache_interval is ignored")
        return self._deep_cache_meta["supports"]

    def _frame_latents(self, crops: np.ndarray, pixels: torch.Tensor, keep: torch.Tensor):
        """Reference and masked-image latents of F crops, cached by crop and mask content (avatars loop)."""
        mask_digest = hashlib.blake2b(keep.numpy().tobytes(), digest_size=16).digest()
        keys = [hashlib.blake2b(c.tobytes() + mask_digest, digest_size=16).digest() for c in crops]
        with self._lock:
            found = {p: self._latent_cache[k] for p, k in enumerate(keys) if k in self._latent_cache}
        missing = [p for p in range(len(keys)) if p not in found]
        if missing:
            px = pixels[missing].to(self.device, self.dtype)
            masked = px * keep.to(self.device, self.dtype)
            ref_lat, masked_lat = encode_latents(self.vae, torch.cat([px, masked])).chunk(2)
            if ref_lat.is_cuda:  # cached latents are read from other sessions' streams: written first
                torch.cuda.current_stream(self.device).synchronize()
            with self._lock:
                for j, p in enumerate(missing):
                    found[p] = self._latent_cache[keys[p]] = (ref_lat[j], masked_lat[j])
                while len(self._latent_cache) > LATENT_CACHE_FRAMES:
                    self._latent_cache.popitem(last=False)
        pairs = [found[p] for p in range(len(keys))]
        if self.device.type == "cuda":
            # a cached latent written on another session's stream is read on this one: tell the
            # allocator, so that evicting it cannot hand its memory to that stream before this read
            stream = torch.cuda.current_stream(self.device)
            for ref, masked in pairs:
                ref.record_stream(stream)
                masked.record_stream(stream)
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])


@contextlib.contextmanager
def _on_stream(stream: Any):
    """Runs the block on ``stream`` (a CUDA stream), or as is when there is none (CPU)."""
    if stream is None:
        yield
        return
    with torch.cuda.stream(stream):
        yield


def _to_host_async(x: torch.Tensor) -> torch.Tensor:
    """A device-to-host copy queued on the current stream into pinned memory (the host does not wait)."""
    host = torch.empty(x.shape, dtype=x.dtype, pin_memory=True)
    host.copy_(x, non_blocking=True)
    return host


def _avatar_mask(avatar: Avatar, resolution: int) -> np.ndarray:
    m = getattr(avatar, "mask", None)
    if m is None or np.asarray(m).shape[:2] != (resolution, resolution):
        return fixed_mask(resolution)
    m = np.asarray(m, dtype=np.float64)
    return m[..., 0] if m.ndim == 3 else m

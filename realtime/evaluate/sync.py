"""Lip-sync judgement with LatentSync's StableSyncNet: LSE-D / LSE-C style scores and the A/V offset.

Inputs as LatentSync trains its SyncNet (``syncnet_16_pixel*.yaml``): windows of 16 video frames at
25 fps, each frame the lower half of the 256 x 256 aligned face in [-1, 1], stacked frame-major into
48 channels; the matching audio window is 52 frames of Wav2Lip's mel spectrogram (80 mel frames/s)
starting at mel frame ``int(80 * start / 25)``.

Scores follow SyncNet's evaluation (Chung & Zisserman; the LSE metrics of Wav2Lip): for every offset
o in [-15, 15] frames, the mean over windows of the distance between the video window at i and the
audio window at i - o; the offset is the argmin, LSE-D the minimum mean distance and LSE-C the median
minus the minimum. Embeddings are unit vectors here, so distances are in [0, 2] and the numbers are
not on the scale of the original SyncNet's (about 6-8 for LSE-D); compare runs of the same checkpoint.
Unlike SyncNet's code, windows shifted past either end are left out instead of zero-padded.
A positive offset means the video lags the audio (the mouth moves ``offset`` frames after the sound).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from models.syncnet import StableSyncNet, SyncNetConfig
from realtime.audio.io import SAMPLE_RATE
from realtime.config import ConfigError, from_dict, load_yaml
from realtime.errors import WeightsError, weights_load_reason

log = logging.getLogger(__name__)

# Wav2Lip's audio hyper-parameters (LatentSync configs/audio.yaml).
N_FFT, HOP, WIN = 800, 200, 800
N_MELS, FMIN, FMAX = 80, 55.0, 7600.0
PREEMPHASIS, MIN_LEVEL_DB, REF_LEVEL_DB, MAX_ABS = 0.97, -100.0, 20.0, 4.0

FPS = 25.0
WINDOW_FRAMES = 16
MEL_PER_SECOND = SAMPLE_RATE // HOP  # 80
MEL_WINDOW = 52  # ceil(16 / 25 * 80)
MAX_OFFSET = 15  # SyncNet's vshift


# ---- audio -------------------------------------------------------------------------------------

def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default, htk=False): linear below 1 kHz, log above."""
    f = np.asarray(f, np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, f / f_sp)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, np.float64)
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, np.log(6.4) / 27.0
    return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)


@functools.lru_cache(maxsize=2)
def mel_filters(sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS, fmin: float = FMIN,
                fmax: float = FMAX) -> np.ndarray:
    """(n_mels, 1 + n_fft/2) triangular filters with Slaney area normalisation (librosa.filters.mel)."""
    fft_freqs = np.linspace(0, sr / 2, 1 + n_fft // 2)
    mel_f = _mel_to_hz(np.linspace(_hz_to_mel(fmin), _hz_to_mel(fmax), n_mels + 2))
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels]))[:, None]
    return weights


def wav2lip_mel(samples: np.ndarray) -> np.ndarray:
    """16 kHz mono -> (80, 1 + len // 200) normalised log-mel in [-4, 4] (Wav2Lip / LatentSync)."""
    from scipy.signal import get_window, lfilter  # scipy.signal is slow to import: only the audio side needs it

    x = lfilter([1, -PREEMPHASIS], [1], np.asarray(samples, np.float64))
    x = np.pad(x, N_FFT // 2)  # centred frames, zero padding (librosa >= 0.10 default)
    n = 1 + (len(x) - N_FFT) // HOP
    frames = np.lib.stride_tricks.as_strided(x, (n, N_FFT), (x.strides[0] * HOP, x.strides[0]))
    spec = np.abs(np.fft.rfft(frames * get_window("hann", WIN, fftbins=True), axis=1)).T  # (401, n)
    mel = mel_filters() @ spec
    db = 20 * np.log10(np.maximum(10 ** (MIN_LEVEL_DB / 20), mel)) - REF_LEVEL_DB
    return np.clip(2 * MAX_ABS * (db - MIN_LEVEL_DB) / -MIN_LEVEL_DB - MAX_ABS, -MAX_ABS, MAX_ABS).astype(np.float32)


def mel_window_start(frame: int, fps: float = FPS) -> int:
    return int(MEL_PER_SECOND * (frame / float(fps)))


# ---- video -------------------------------------------------------------------------------------

def video_windows(crops: np.ndarray, starts: range | list[int] | None = None) -> np.ndarray:
    """(T, 256, 256, 3) uint8 aligned faces -> (len(starts), 48, 128, 256) float32 windows of lower
    halves in [-1, 1], frame-major (``f c``); default: every start 0 .. T-16."""
    t, r = crops.shape[:2]
    starts = range(max(t - WINDOW_FRAMES + 1, 0)) if starts is None else starts
    out = np.empty((len(starts), WINDOW_FRAMES * 3, r // 2, r), np.float32)
    for k, s in enumerate(starts):
        lower = crops[s:s + WINDOW_FRAMES, r // 2:].astype(np.float32) / 127.5 - 1.0  # (16, R/2, R, 3)
        out[k] = lower.transpose(0, 3, 1, 2).reshape(-1, r // 2, r)
    return out


# ---- scores ------------------------------------------------------------------------------------

@dataclass
class SyncScore:
    offset: int  # frames; positive: the video lags the audio
    lse_d: float  # mean embedding distance at the best offset (lower is better)
    lse_c: float  # median distance over offsets minus the minimum (higher is more confident)
    distances: np.ndarray  # (2 * max_offset + 1,) mean distance per offset, offsets -max..+max
    windows: int

    def as_dict(self) -> dict:
        return {"offset_frames": self.offset, "lse_d": self.lse_d, "lse_c": self.lse_c, "windows": self.windows,
                "distances": [round(float(d), 6) for d in self.distances]}


def offset_search(video_emb: np.ndarray, audio_emb: np.ndarray, max_offset: int = MAX_OFFSET) -> SyncScore:
    """video_emb (N, D) and audio_emb (M, D) indexed by window start frame -> ``SyncScore``.

    For offset o, video window i is compared with audio window i - o (pairs past either end skipped).
    """
    v = np.asarray(video_emb, np.float64)
    a = np.asarray(audio_emb, np.float64)
    offsets = np.arange(-max_offset, max_offset + 1)
    means = np.full(len(offsets), np.nan)
    for k, o in enumerate(offsets):
        i = np.arange(len(v))
        j = i - o
        ok = (j >= 0) & (j < len(a))
        if ok.any():
            means[k] = np.linalg.norm(v[i[ok]] - a[j[ok]], axis=1).mean()
    if np.isnan(means).all():
        raise ValueError("no overlapping audio and video windows to compare")
    best = int(np.nanargmin(means))
    return SyncScore(offset=int(offsets[best]), lse_d=float(means[best]),
                     lse_c=float(np.nanmedian(means) - means[best]), distances=means, windows=len(v))


# ---- model I/O ---------------------------------------------------------------------------------

def load_syncnet_config(path: str | Path | None):
    """SyncNetConfig from a LatentSync SyncNet YAML (its ``model:`` section); None: syncnet_16_pixel_attn."""
    if path is None:
        return SyncNetConfig()
    data = load_yaml(path)
    if "model" not in data:
        raise ConfigError(f"{path}: missing section 'model'")
    d = data.get("data", {}) or {}
    if d.get("latent_space"):
        raise ConfigError(f"{path}: latent-space SyncNets (data.latent_space: true) are not supported; "
                          "use a pixel-space config such as syncnet_16_pixel_attn.yaml")
    if d.get("num_frames", WINDOW_FRAMES) != WINDOW_FRAMES or d.get("resolution", 256) != 256:
        raise ConfigError(f"{path}: only 16-frame, 256-pixel SyncNets are supported")
    return from_dict(SyncNetConfig, data["model"], source=str(path), prefix="model")


def load_syncnet(ckpt: str | Path | None, config: str | Path | None = None, device: str = "cpu"):
    """StableSyncNet with the checkpoint's weights (strict, ``weights_only=True``), eval mode."""
    if ckpt is None:
        raise WeightsError("no SyncNet checkpoint given: pass --syncnet PATH to LatentSync's "
                           "checkpoints/stable_syncnet.pt (none ships with the engine, nothing is downloaded)")
    path = Path(ckpt)
    if not path.is_file():
        raise WeightsError(f"SyncNet checkpoint {path} does not exist; pass --syncnet with the path of "
                           "LatentSync's stable_syncnet.pt")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file is one clear error
        raise WeightsError(f"SyncNet checkpoint {path} cannot be read as torch weights ({weights_load_reason(e)}); "
                           "pass LatentSync's stable_syncnet.pt") from None
    sd = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(sd, dict):
        raise WeightsError(f"SyncNet checkpoint {path} holds no state dict")
    with torch.device("meta"):  # no 1.6 GB random init: the checkpoint's tensors are adopted below
        model = StableSyncNet(load_syncnet_config(config))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    misshaped = sorted(k for k in set(sd) & set(expected) if tuple(sd[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or misshaped:
        raise WeightsError(
            f"SyncNet checkpoint {path} does not match the config ({config or 'syncnet_16_pixel_attn'}): "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}), "
            f"{len(misshaped)} misshaped (e.g. {misshaped[:3]}); pass --config with the checkpoint's YAML")
    model.load_state_dict(sd, strict=True, assign=True)
    return model.float().to(device).eval()


def evaluate(model, crops: np.ndarray, samples: np.ndarray, fps: float = FPS, max_offset: int = MAX_OFFSET,
             batch: int = 8, device: str = "cpu") -> SyncScore:
    """Scores aligned faces (T, 256, 256, 3) against 16 kHz audio with a loaded StableSyncNet."""
    mel = wav2lip_mel(samples)
    n = len(crops) - WINDOW_FRAMES + 1
    starts = [s for s in range(max(n, 0)) if mel_window_start(s, fps) + MEL_WINDOW <= mel.shape[1]]
    if not starts:
        raise ValueError(f"need at least {WINDOW_FRAMES} frames with audio to judge lip sync, got {len(crops)}")
    dtype = next(model.parameters()).dtype
    v, a = [], []
    with torch.no_grad():
        for b in range(0, len(starts), batch):
            part = starts[b:b + batch]  # windows are built per batch: a whole clip's would take GBs
            mel_w = np.stack([mel[:, mel_window_start(s, fps):mel_window_start(s, fps) + MEL_WINDOW] for s in part])
            v.append(model.embed_video(torch.from_numpy(video_windows(crops, part)).to(device, dtype)).float().cpu())
            a.append(model.embed_audio(torch.from_numpy(mel_w[:, None]).to(device, dtype)).float().cpu())
    return offset_search(torch.cat(v).numpy(), torch.cat(a).numpy(), max_offset)

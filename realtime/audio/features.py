"""LatentSync-exact audio features: Whisper encoder taps at 50 steps/s and per-video-frame blocks.

Reproduces LatentSync's ``Audio2Feature`` numerics (checked against its own output to <= 1e-3):

1. log-mel of the whole, *unpadded* 16 kHz audio (Whisper's normalisation uses the clip's max);
2. cut into 30 s windows of 3000 mel frames; the last one is padded with 0.0 *in log-mel space*
   (not by zero audio, which changes the features by up to ~600);
3. each window through the encoder at positions 0..1499, keeping 5 taps (conv + positional
   embedding, each block's output, no ``ln_post``), and only the steps that real audio covers:
   ``(mel frames in the window) // 2``;
4. for video frame ``i`` at ``fps``: centre step ``c = int(i * 50 / fps)``, steps ``[c-4, c+6)``
   clamped to the features, flattened index-major, tap-minor into a (50, 384) block.

Frame count: ``N = floor(num_samples * fps / 16000)``, the number of whole video frames the audio
spans. LatentSync's own chunk loop returns two chunks more (it stops after the first centre past
the end) and its pipeline trims them to the video; we return exactly N.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from realtime.audio.io import SAMPLE_RATE, load_audio
from realtime.audio.whisper_loader import load_whisper, model_identity

log = logging.getLogger(__name__)

N_FFT = 400  # 25 ms STFT window
HOP_LENGTH = 160  # 10 ms between mel frames -> 100 mel frames/s
MEL_FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH  # 100
CONV_STRIDE = 2  # the encoder's second conv halves the frame rate
STEPS_PER_SECOND = MEL_FRAMES_PER_SECOND // CONV_STRIDE  # 50 encoder steps/s, 20 ms each
STEP_MS = 1000 // STEPS_PER_SECOND  # 20 ms per encoder step
SAMPLES_PER_STEP = HOP_LENGTH * CONV_STRIDE  # 320
WINDOW_SECONDS = 30  # Whisper's fixed input length
WINDOW_MEL_FRAMES = WINDOW_SECONDS * MEL_FRAMES_PER_SECOND  # 3000 mel frames per window
WINDOW_STEPS = WINDOW_MEL_FRAMES // CONV_STRIDE  # 1500 encoder positions
# LatentSync's audio_feat_length = [2, 2]: 2*2 steps before the centre, (2+1)*2 from it on.
STEPS_BEFORE = 4
STEPS_AFTER = 6
STEPS_PER_BLOCK = STEPS_BEFORE + STEPS_AFTER  # 10 steps per video frame
NUM_TAPS_TINY = 5  # 1 + 4 encoder blocks of Whisper tiny
BLOCK_ROWS = STEPS_PER_BLOCK * NUM_TAPS_TINY  # 50 audio tokens per frame for the UNet
# A frame starting at step c needs steps up to c+5, i.e. audio up to (c+6)*20 ms: 120 ms ahead.
LOOKAHEAD_SECONDS = STEPS_AFTER / STEPS_PER_SECOND  # 0.12
# Bump when anything changes the numbers, so cached features are recomputed.
FEATURE_VERSION = "latentsync-taps-v1"


def num_steps(num_samples: int) -> int:
    """Encoder steps (T) LatentSync produces for ``num_samples`` of 16 kHz audio."""
    mel_frames = max(int(num_samples), N_FFT) // HOP_LENGTH  # whisper drops the STFT's last frame
    full, rest = divmod(mel_frames, WINDOW_MEL_FRAMES)
    return full * WINDOW_STEPS + rest // CONV_STRIDE


def num_video_frames(num_samples: int, fps: float) -> int:
    """N = whole video frames spanned by the audio: floor(duration * fps)."""
    # The epsilon absorbs float error at exact boundaries (e.g. 29.97 fps) without moving real ones.
    return max(0, int(math.floor(int(num_samples) * float(fps) / SAMPLE_RATE + 1e-9)))


def frame_center_step(i: int, fps: float) -> int:
    """Centre encoder step of video frame ``i``, exactly LatentSync's ``int(i * 50 / fps)``."""
    return int(i * STEPS_PER_SECOND / fps)


def frame_step_indices(i: int, fps: float, num_feature_steps: int) -> np.ndarray:
    """The 10 feature indices behind frame ``i``: ``[c-4, c+6)`` clamped to ``[0, T-1]``."""
    c = frame_center_step(i, fps)
    return np.clip(np.arange(c - STEPS_BEFORE, c + STEPS_AFTER), 0, num_feature_steps - 1)


def last_step_needed(i: int, fps: float) -> int:
    """Highest (unclamped) encoder step frame ``i`` reads: a streaming encoder may emit the frame
    once steps ``<= last_step_needed(i)`` (or the end of the audio) are final."""
    return frame_center_step(i, fps) + STEPS_AFTER - 1


def frame_block(features: np.ndarray, i: int, fps: float) -> np.ndarray:
    """(T, taps, C) features -> frame ``i``'s (10 * taps, C) block, index-major, tap-minor."""
    idx = frame_step_indices(i, fps, features.shape[0])
    return features[idx].reshape(-1, features.shape[-1])


def chunk_features(features: np.ndarray, fps: float, num_frames: int) -> np.ndarray:
    """(T, taps, C) -> (num_frames, 10 * taps, C): ``frame_block`` for every frame, vectorised."""
    T, taps, C = features.shape
    if num_frames == 0:
        return np.zeros((0, STEPS_PER_BLOCK * taps, C), features.dtype)
    idx = np.stack([frame_step_indices(i, fps, T) for i in range(num_frames)])  # (N, 10)
    return features[idx].reshape(num_frames, STEPS_PER_BLOCK * taps, C)


def log_mel(audio: np.ndarray, n_mels: int = 80, dtype=None):
    """Whisper's normalised log-mel of the unpadded audio: (n_mels, num_samples // 160).

    Same formula as ``whisper.audio.log_mel_spectrogram`` (Hann STFT, drop the last frame, power,
    mel filters, log10 clamped at 1e-10 and at the clip's max - 8, then (x + 4) / 4), in ``dtype``
    (default float64: see ``compute_features``).
    """
    # torch and openai-whisper (numba) are heavy: importing this module stays cheap
    import torch
    from whisper.audio import mel_filters

    dtype = dtype or torch.float64
    audio = np.asarray(audio, dtype=np.float32)
    if audio.size < N_FFT:
        # torch.stft's reflect padding needs > N_FFT/2 samples; a few ms of zeros is harmless.
        audio = np.pad(audio, (0, N_FFT - audio.size))
    x = torch.from_numpy(audio).to(dtype)
    stft = torch.stft(x, N_FFT, HOP_LENGTH, window=torch.hann_window(N_FFT, dtype=dtype), return_complex=True)
    power = stft[..., :-1].abs() ** 2
    mel = mel_filters("cpu", n_mels).to(dtype) @ power
    log_spec = torch.clamp(mel, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


def compute_features(model, audio: np.ndarray, dtype=None) -> np.ndarray:
    """LatentSync's taps for 16 kHz mono ``audio``: (T, 1 + n_layer, C) float32, T = ``num_steps``.

    ``dtype`` is the arithmetic precision, default float64 (fp32 weights, fp64 activations). Why:
    the last tap holds "massive activations" up to |x| ~ 614 where fp32 rounding alone moves
    values by ~1e-3 depending on the BLAS's summation order; fp64 lands within ~6e-4 of
    LatentSync's fp32 reference on any machine, fp32 here ~1.1e-3. It costs ~2x the time.
    """
    # torch is heavy (models.whisper_taps imports it): importing this module stays cheap
    import torch
    import torch.nn.functional as F

    from models.whisper_taps import encoder_taps  # imports torch, as above

    dtype = dtype or torch.float64
    encoder = model.encoder
    device = next(encoder.parameters()).device
    mel = log_mel(audio, model.dims.n_mels, dtype=dtype)
    total = mel.shape[-1]
    out = []
    with torch.inference_mode():
        for seek in range(0, total, WINDOW_MEL_FRAMES):
            seg = mel[:, seek : seek + WINDOW_MEL_FRAMES]
            real = seg.shape[-1]
            seg = F.pad(seg, (0, WINDOW_MEL_FRAMES - real), value=0.0)  # pad in log-mel space
            taps = encoder_taps(encoder, seg[None].to(device))[0]
            out.append(taps[: real // CONV_STRIDE].float().cpu().numpy())
    feats = np.concatenate(out, axis=0) if out else np.zeros((0, len(encoder.blocks) + 1, encoder.conv1.out_channels), np.float32)
    assert feats.shape[0] == num_steps(len(audio)), (feats.shape, num_steps(len(audio)))
    return feats


class Audio2Feature:
    """LatentSync's ``Audio2Feature``: audio -> (T, 5, 384) taps -> per-frame (50, 384) blocks.

    ``model`` is an openai-whisper ``Whisper`` (default: the embedded tiny.en); ``cache`` an
    optional ``realtime.audio.cache.FeatureCache`` (used together with ``model_id``).
    """

    def __init__(self, model=None, *, whisper_path=None, device: str = "cpu", cache=None, model_id: str | None = None):
        self.model = model if model is not None else load_whisper(whisper_path, device)
        if cache is not None and model_id is None:
            if model is not None:
                raise ValueError("pass model_id together with an explicit model and a cache")
            model_id = model_identity(whisper_path)
        self.cache = cache
        self.model_id = model_id

    def audio2feat(self, audio) -> np.ndarray:
        """Path or 16 kHz array -> (T, 5, 384) float32 features (from the cache when present)."""
        samples = load_audio(audio)
        if self.cache is None:
            return compute_features(self.model, samples)
        expected = num_steps(len(samples))
        feats = self.cache.get(samples, self.model_id, expected_steps=expected)
        if feats is None:
            feats = compute_features(self.model, samples)
            self.cache.put(samples, self.model_id, feats)
        return feats

    @staticmethod
    def feature2chunks(features: np.ndarray, fps: float, num_frames: int) -> np.ndarray:
        """(T, 5, 384) -> (num_frames, 50, 384)."""
        return chunk_features(features, fps, num_frames)

    def __call__(self, audio, fps: float) -> tuple[np.ndarray, np.ndarray]:
        """Features and chunks for all ``num_video_frames`` frames of ``audio``."""
        samples = load_audio(audio)
        feats = self.audio2feat(samples)
        return feats, chunk_features(feats, fps, num_video_frames(len(samples), fps))

"""Incremental front-end of the streaming encoder: 16 kHz samples -> log-mel -> conv -> encoder
inputs, each sample and each mel frame processed once, with the numerics of the offline path.

Offline (``realtime.audio.features``) computes Whisper's log-mel of the whole clip (centred STFT,
reflect padding at both ends of the clip), cuts it into 30 s windows of ``2 * n_ctx`` mel frames
and runs the two convolutions per window with zero padding at the window's edges. This class does
the same one step (20 ms) at a time:

- mel frame ``j`` (centred on sample ``160 j``) is computed once samples ``< 160 j + 200`` exist;
  the first frames use the reflection of the stream's first 200 samples, ``finish()`` appends the
  reflection of its last 200, as ``torch.stft(center=True)`` does;
- normalisation uses the running maximum of the log-mel so far instead of the clip's maximum
  (measured: differences <= 0.001 in the features);
- the convolutions keep the last mel frame and the last conv1 output as carry; both restart from
  zeros at every window start (that is the offline zero padding), and a window's last step sees a
  zero mel frame after it, as offline.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from realtime.audio.features import CONV_STRIDE, HOP_LENGTH, N_FFT

HALF_WINDOW = N_FFT // 2  # 200 samples of context on each side of a centred mel frame


class StreamingFrontEnd:
    """Samples in, encoder-input steps (conv front-end + positional embedding) out.

    ``weights``: the ``StreamingWeights`` of the model (conv matmuls, positional embedding).
    All positions are local to the current window of ``n_ctx`` steps.
    """

    def __init__(self, weights):
        from whisper.audio import mel_filters  # openai-whisper imports numba: loaded with the first encoder

        encoder = weights.encoder
        self.weights = weights
        self.dtype = weights.dtype
        self.n_mels = encoder.conv1.in_channels
        self.n_ctx = encoder.positional_embedding.shape[0]
        self.window_mel = self.n_ctx * CONV_STRIDE
        self.mel_fb = mel_filters("cpu", self.n_mels).to(torch.float32)  # (n_mels, 201)
        # A few frames per call: windowed frames through torch.fft.rfft (~8 us for 2 frames; the
        # former (402, 400) DFT matmul read 640 kB per call and cost ~60 us on a loaded cache, and
        # torch.stft has more per-call overhead). mel_fb_t is (201, n_mels) for a (k, 201) power.
        self.window = torch.hann_window(N_FFT, dtype=torch.float32)
        self.mel_fb_t = self.mel_fb.T.contiguous()
        self.width = encoder.conv1.out_channels
        self.reset()

    def reset(self) -> None:
        """Forget all audio; the next sample is sample 0 of a new stream."""
        # Samples from global index ``audio_start`` on (the reflected prefix has negative indices).
        self.audio = torch.zeros(0)
        self.audio_start = 0
        self.n_real = 0  # real samples received
        self.finished = False
        self.total_mel = None  # mel frames of the whole stream, known after finish()
        self.log_max = -float("inf")
        self.n_mel = 0  # global mel frames computed
        self.n_steps = 0  # global encoder steps produced
        self._start_window(0)

    def _start_window(self, step: int) -> None:
        C = self.width
        self.window_first_step = step
        # Mel frames not yet fully consumed by conv1, starting at local frame n_c1 - 1 (zero pad).
        self.mel_buf = torch.zeros(self.n_mels, 1)
        self.n_c1 = 0  # local conv1 outputs computed
        self.c1_buf = torch.zeros(C, 1)  # gelu(conv1) from local index 2 * local_steps - 1 (zero pad)

    # ---- audio ---------------------------------------------------------------------------------
    def add(self, samples: Tensor) -> None:
        if self.n_real == 0 and self.audio.numel() == 0:
            self.audio = samples.clone()
        else:
            self.audio = torch.cat([self.audio, samples])
        self.n_real += samples.numel()
        if self.audio_start == 0 and self.n_mel == 0 and self.n_real > HALF_WINDOW:
            # torch.stft(center=True) reflects the first 200 samples (without sample 0).
            prefix = self.audio[1 : HALF_WINDOW + 1].flip(0)
            self.audio = torch.cat([prefix, self.audio])
            self.audio_start = -HALF_WINDOW

    def finish(self) -> None:
        """End of stream: append the end reflection and fix the number of mel frames."""
        if self.finished:
            return
        self.finished = True
        n = self.n_real
        if n < N_FFT:  # as the offline log_mel: a few ms of zeros for very short clips
            self.add(torch.zeros(N_FFT - n))
            self.n_real = n
            n_eff = N_FFT
        else:
            n_eff = n
        self.total_mel = n_eff // HOP_LENGTH
        end = self.audio[-HALF_WINDOW - 1 : -1].flip(0)
        self.audio = torch.cat([self.audio, end])

    def mel_available(self) -> int:
        """Global mel frames computable from the samples so far (all of them after ``finish``)."""
        if self.finished:
            return self.total_mel
        if self.n_real <= HALF_WINDOW:
            return 0
        return max(0, (self.n_real - HALF_WINDOW) // HOP_LENGTH + 1)

    @staticmethod
    def samples_for_mel(j: int) -> int:
        """Real samples needed before global mel frame ``j`` can be computed."""
        return max(HOP_LENGTH * j + HALF_WINDOW, HALF_WINDOW + 1)

    def _compute_mel(self, upto: int) -> Tensor:
        """Global mel frames [n_mel, upto) as normalised log-mel (n_mels, k)."""
        j0 = self.n_mel
        a = HOP_LENGTH * j0 - HALF_WINDOW - self.audio_start
        b = HOP_LENGTH * (upto - 1) + HALF_WINDOW - self.audio_start
        x = self.audio[a:b]
        frames = x.unfold(0, N_FFT, HOP_LENGTH)  # (k, 400)
        power = torch.fft.rfft(frames * self.window).abs().square_()  # (k, 201)
        log_spec = torch.mm(power, self.mel_fb_t).clamp_(min=1e-10).log10_().T  # (n_mels, k)
        self.log_max = max(self.log_max, float(log_spec.max()))
        log_spec = log_spec.clamp(min=self.log_max - 8.0)
        self.n_mel = upto
        # Drop samples no later mel frame needs (bounded memory for unbounded streams).
        # (The last N_FFT/2 + 1 real samples stay for the end reflection of finish().)
        keep_from = min(HOP_LENGTH * upto - HALF_WINDOW, self.n_real - HALF_WINDOW - 1) - self.audio_start
        if keep_from > 0:
            self.audio = self.audio[keep_from:]
            self.audio_start += keep_from
        return (log_spec + 4.0) / 4.0

    # ---- steps ---------------------------------------------------------------------------------
    def mel_needed(self, step: int) -> int:
        """Global mel frames that must exist before global ``step`` can be produced."""
        w_start = (step // self.n_ctx) * self.n_ctx
        local = step - w_start
        last_local = min(CONV_STRIDE * local + 2, self.window_mel - 1)
        need = w_start * CONV_STRIDE + last_local + 1
        if self.total_mel is not None:
            need = min(need, self.total_mel)
        return need

    def produce(self, upto_step: int) -> Tensor:
        """Encoder inputs for global steps [n_steps, upto_step), all inside the current window:
        (k, C) = gelu(conv2(gelu(conv1(mel)))) + positional embedding."""
        s0, s1 = self.n_steps, upto_step
        w0 = self.window_first_step
        assert w0 <= s0 < s1 <= w0 + self.n_ctx, (s0, s1, w0)
        l0, l1 = s0 - w0, s1 - w0  # local steps
        # conv1 outputs needed up to local 2*(l1-1)+1, which needs local mel up to 2*l1.
        c1_hi = min(CONV_STRIDE * l1, self.window_mel)  # exclusive
        mel_hi = min(c1_hi + 1, self.window_mel)  # exclusive, local
        g_mel_hi = w0 * CONV_STRIDE + mel_hi
        have = self.n_mel - w0 * CONV_STRIDE  # local mel frames already computed
        parts = [self.mel_buf]
        if g_mel_hi > self.n_mel:
            real_hi = g_mel_hi if self.total_mel is None else min(g_mel_hi, self.total_mel)
            if real_hi > self.n_mel:
                parts.append(self._compute_mel(real_hi))
            have = real_hi - w0 * CONV_STRIDE
        mel = torch.cat(parts, dim=1)  # local frames [n_c1 - 1, have)
        # Frames past the window or past the end of the stream are LatentSync's 0.0 padding.
        pad = (c1_hi + 1) - have
        if pad > 0:
            mel = F.pad(mel, (0, pad))
        mel = mel.to(self.dtype)
        win1 = mel[:, : c1_hi - self.n_c1 + 2].unfold(1, 3, 1).permute(1, 0, 2)  # (k, n_mels, 3)
        c1 = self.weights.conv1(win1.reshape(win1.shape[0], -1)).T  # (C, k) = gelu(conv1)
        # mel_buf keeps local frames from c1_hi - 1 (conv1's left context for the next call).
        self.mel_buf = mel[:, c1_hi - self.n_c1 : c1_hi - self.n_c1 + 1 + max(0, have - c1_hi)].to(torch.float32)
        self.n_c1 = c1_hi
        g = torch.cat([self.c1_buf.to(self.dtype), c1], dim=1)  # local conv1 outputs [2*l0 - 1, c1_hi)
        win2 = g.unfold(1, 3, CONV_STRIDE).permute(1, 0, 2)  # (steps, C, 3)
        x = self.weights.conv2(win2.reshape(win2.shape[0], -1))[: l1 - l0]  # (steps, C) = gelu(conv2)
        self.c1_buf = g[:, CONV_STRIDE * (l1 - l0) : CONV_STRIDE * (l1 - l0) + 1].to(torch.float32)
        x = x + self.weights.positions[l0:l1]
        self.n_steps = s1
        if l1 == self.n_ctx:
            self._start_window(s1)
        return x

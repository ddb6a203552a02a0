"""Audio-to-viseme model: per video frame, Whisper feature block -> 15 viseme logits and
ARKit-named mouth blendshapes in [0, 1].

Input per frame is the flattened block of ``steps`` encoder steps x ``n_taps`` taps (row =
step * taps + tap, LatentSync's order), each a 384-vector. Each chosen tap is layer-normalised
and reduced by a fixed PCA basis (fitted on training features, stored as buffers): training then
runs on the small reduced features and stays cheap on a CPU. A per-step projection and two
convolutions over the steps summarise the block; a GRU over frames, which only looks at the
past, carries coarticulation, so streaming frame by frame equals running a whole clip at once.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass
class VisemeModelConfig:
    n_state: int = 384  # Whisper tiny's width (LatentSync cross_attention_dim)
    n_taps: int = 5  # taps stored per step in the input block
    steps: int = 10  # encoder steps per frame (LatentSync: [c-4, c+6))
    use_taps: tuple[int, ...] = (0, 1, 2, 3, 4)  # which taps the model reads
    pca_dim: int = 48  # fixed per-tap reduction 384 -> 48 (keeps most of the variance)
    d_step: int = 64  # per-step projection of the reduced taps
    d_frame: int = 128  # frame embedding and GRU width
    n_visemes: int = 15
    n_blendshapes: int = 8
    dropout: float = 0.1

    @classmethod
    def tiny(cls) -> "VisemeModelConfig":
        """Test preset: same topology, a few thousand parameters."""
        return cls(n_state=16, steps=4, pca_dim=6, d_step=8, d_frame=12)


@dataclass
class VisemeOutput:
    logits: Tensor  # (B, T, n_visemes)
    blendshapes: Tensor  # (B, T, n_blendshapes) in [0, 1]
    state: Tensor  # (1, B, d_frame) GRU state after the last frame


class VisemeModel(nn.Module):
    def __init__(self, cfg: VisemeModelConfig):
        super().__init__()
        self.cfg = cfg
        n_taps = len(cfg.use_taps)
        n_in = n_taps * cfg.pca_dim
        # Per-tap normalisation: Whisper's deep taps carry a few "massive activations" (norms of
        # several hundred at pauses) that would otherwise dominate the projection.
        self.tap_norm = nn.LayerNorm(cfg.n_state, elementwise_affine=False)
        # Fixed reduction, set by fit_reduction(); the default keeps the first pca_dim channels.
        self.register_buffer("tap_mean", torch.zeros(n_taps, cfg.n_state))
        self.register_buffer("tap_basis", torch.eye(cfg.n_state)[:, : cfg.pca_dim].repeat(n_taps, 1, 1))
        self.step_proj = nn.Linear(n_in, cfg.d_step)
        self.conv1 = nn.Conv1d(cfg.d_step, cfg.d_step, 3, padding=1)
        self.conv2 = nn.Conv1d(cfg.d_step, cfg.d_step, 3, padding=1)
        self.frame_proj = nn.Linear(cfg.steps * cfg.d_step, cfg.d_frame)
        self.drop = nn.Dropout(cfg.dropout)
        self.gru = nn.GRU(cfg.d_frame, cfg.d_frame, batch_first=True)
        self.viseme_head = nn.Linear(2 * cfg.d_frame, cfg.n_visemes)
        self.blend_head = nn.Linear(2 * cfg.d_frame, cfg.n_blendshapes)
        self.register_buffer("taps_index", torch.tensor(cfg.use_taps, dtype=torch.long), persistent=False)

    def normalised_taps(self, blocks: Tensor) -> Tensor:
        """(..., steps * n_taps, n_state) -> (..., steps, len(use_taps), n_state), layer-normalised."""
        cfg = self.cfg
        R, C = blocks.shape[-2:]
        assert R == cfg.steps * cfg.n_taps and C == cfg.n_state, (
            f"blocks must be (..., {cfg.steps * cfg.n_taps}, {cfg.n_state}), got {tuple(blocks.shape)}"
        )
        x = blocks.reshape(*blocks.shape[:-2], cfg.steps, cfg.n_taps, C).index_select(-2, self.taps_index)
        return self.tap_norm(x.float())

    @torch.no_grad()
    def fit_reduction(self, blocks: Tensor) -> Tensor:
        """Fits the per-tap PCA on sample blocks (N, steps * n_taps, n_state); returns the share of
        variance kept per tap."""
        x = self.normalised_taps(blocks)  # (N, steps, taps, C)
        x = x.permute(2, 0, 1, 3).reshape(x.shape[2], -1, x.shape[3])  # (taps, N*steps, C)
        x = x.double()
        mean = x.mean(1)
        cov = torch.einsum("tnc,tnd->tcd", x - mean[:, None], x - mean[:, None]) / x.shape[1]
        evals, evecs = torch.linalg.eigh(cov)  # ascending
        r = self.cfg.pca_dim
        self.tap_mean.copy_(mean.float())
        self.tap_basis.copy_(evecs[:, :, -r:].flip(-1).float())
        return (evals[:, -r:].sum(-1) / evals.sum(-1)).float()

    def reduce(self, blocks: Tensor) -> Tensor:
        """(..., steps * n_taps, n_state) -> (..., steps, len(use_taps), pca_dim)."""
        x = self.normalised_taps(blocks) - self.tap_mean
        return torch.einsum("...tc,tcr->...tr", x, self.tap_basis)

    def frame_embedding(self, reduced: Tensor) -> Tensor:
        """(B, T, steps, taps, pca_dim) -> (B, T, d_frame), each frame on its own."""
        cfg = self.cfg
        B, T = reduced.shape[:2]
        x = reduced.reshape(B * T, cfg.steps, -1).float()  # (BT, steps, taps*r)
        x = F.gelu(self.step_proj(x)).transpose(1, 2)  # (BT, d_step, steps)
        x = x + F.gelu(self.conv1(x))
        x = x + F.gelu(self.conv2(x))
        x = F.gelu(self.frame_proj(self.drop(x.flatten(1))))  # (BT, d_frame)
        return x.view(B, T, cfg.d_frame)

    def forward(self, blocks: Tensor, state: Tensor | None = None, reduced: bool = False) -> VisemeOutput:
        """blocks (B, T, steps * n_taps, n_state) for T consecutive frames (or, with ``reduced``,
        their ``reduce()`` output); ``state`` from the previous call continues a stream."""
        e = self.frame_embedding(blocks if reduced else self.reduce(blocks))
        h, state = self.gru(e, state)
        z = self.drop(torch.cat([e, h], dim=-1))
        return VisemeOutput(self.viseme_head(z), torch.sigmoid(self.blend_head(z)), state)


def checkpoint_dict(model: VisemeModel, extra: dict | None = None) -> dict:
    """Plain-data checkpoint: config dict, weights and any extra metadata (training config...)."""
    return {"config": asdict(model.cfg), "state_dict": model.state_dict(), **(extra or {})}


def model_from_checkpoint(ckpt: dict) -> VisemeModel:
    cfg = dict(ckpt["config"])
    cfg["use_taps"] = tuple(cfg["use_taps"])
    model = VisemeModel(VisemeModelConfig(**cfg))
    model.load_state_dict(ckpt["state_dict"], strict=True)
    return model.eval()

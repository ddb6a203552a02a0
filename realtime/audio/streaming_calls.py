"""Encoder calls of the streaming encoder: the unsettled and new steps of one or several streams
through the encoder blocks at once (``encode_plans``), and the loop that runs such calls until no
stream has a step to encode (``advance_all``). ``StreamingAudioEncoder`` (streaming.py) makes the
plans and commits their results."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from realtime.audio.streaming_weights import StreamingWeights

if TYPE_CHECKING:  # the encoder imports this module; its type is only named here
    from realtime.audio.streaming import StreamingAudioEncoder

log = logging.getLogger(__name__)


@dataclass
class Plan:
    """One stream's share of an encoder call (see ``StreamingAudioEncoder._plan``)."""

    enc: StreamingAudioEncoder
    target: int
    x: Tensor  # (N, C) inputs of the unsettled and new steps
    lo: int  # window position of x's first row (= settled steps)
    local_end: int
    ctx_lo: int  # attended keys: window positions [ctx_lo, fut_hi)
    fut_hi: int
    last_of_window: bool


@torch.inference_mode()
def encode_plans(w: StreamingWeights, plans: list[Plan]) -> list[Tensor]:
    """Runs the encoder blocks for one or several streams at once: the linear layers see all
    streams' rows in one matmul (these calls are bound by reading the weights, so B streams cost
    little more than one), attention runs per stream against its own cache. Returns each plan's
    taps (N_i, n_taps, C)."""
    H, C = w.n_head, w.width
    sizes = [p.x.shape[0] for p in plans]
    x = plans[0].x if len(plans) == 1 else torch.cat([p.x for p in plans])
    taps = torch.empty(x.shape[0], w.n_taps, C)
    taps[:, 0] = x
    for li, layer in enumerate(w.layers):
        h = F.layer_norm(x, (C,), *layer.ln1, layer.eps)
        parts = []
        for p, qkv in zip(plans, layer.qkv(h).split(sizes)):
            q, k, v = qkv.split(C, dim=-1)
            n, L = q.shape[0], p.fut_hi - p.ctx_lo
            p.enc.cache_k[li, p.lo : p.local_end] = k
            p.enc.cache_v[li, p.lo : p.local_end] = v
            keys = p.enc.cache_k[li, p.ctx_lo : p.fut_hi].view(1, L, H, C // H).transpose(1, 2)
            vals = p.enc.cache_v[li, p.ctx_lo : p.fut_hi].view(1, L, H, C // H).transpose(1, 2)
            a = F.scaled_dot_product_attention(q.float().reshape(1, n, H, C // H).transpose(1, 2), keys, vals)
            parts.append(a.transpose(1, 2).reshape(n, C))
        a = parts[0] if len(parts) == 1 else torch.cat(parts)
        x = x + layer.out(a.to(x.dtype))
        x = x + layer.mlp2(layer.mlp1(F.layer_norm(x, (C,), *layer.ln2, layer.eps)))
        taps[:, li + 1] = x
    return list(taps.split(sizes))


def advance_all(encoders: list[StreamingAudioEncoder]) -> list[list[Any] | Exception]:
    """Emits what each encoder can, running encoder calls until none has a step to encode; the
    streams sharing one ``StreamingWeights`` go through each call together (``encode_plans``).

    If a batched call fails, its streams are encoded one by one (their plans as made, so their
    front ends are not asked twice), so that only a stream whose own call fails gets the exception,
    in its slot instead of frames. That stream's front end has moved past audio its encoder never
    took: it must be ``reset()`` before its next push (the server restarts a stream's encoder after
    any failed push)."""
    out: list = [[] for _ in encoders]
    groups: dict[int, list[int]] = {}
    for k, enc in enumerate(encoders):
        groups.setdefault(id(enc.weights), []).append(k)
    for ks in groups.values():
        while ks:
            plans, nxt = [], []
            for k in ks:
                enc = encoders[k]
                out[k] += enc._emit_ready()
                target = enc._next_target()
                if target is not None:
                    plans.append(enc._plan(target))
                    nxt.append(k)
            if not plans:
                break
            weights = plans[0].enc.weights
            try:
                results = encode_plans(weights, plans)
            except Exception as e:
                if len(plans) == 1:
                    results = [e]
                else:
                    log.exception("batched encoder call for %d streams failed; encoding them one by one", len(plans))
                    results = [encode_alone(weights, plan) for plan in plans]
            ks = []
            for k, plan, taps in zip(nxt, plans, results):
                if isinstance(taps, Exception):
                    out[k] = taps
                else:
                    plan.enc._commit(plan, taps)
                    ks.append(k)
    return out


def encode_alone(weights: StreamingWeights, plan: Plan) -> Tensor | Exception:
    """One stream's call on its own: its taps, or the exception its call raised."""
    try:
        return encode_plans(weights, [plan])[0]
    except Exception as e:
        return e

"""The RWKV-4 WKV recurrence, written once in plain PyTorch.

Every fast path (the CUDA kernel in csrc/) is tested against this function. It is differentiable
through autograd, so calling it on float64 inputs gives the reference values *and* gradients.

For channel c, with per-step log-decay w = -exp(time_decay) < 0 and bonus u = time_first:

    y_t = (sum_{i<t} e^{(t-1-i) w + k_i} v_i + e^{u + k_t} v_t) / (same with v -> 1)

The state carried between calls is (aa, bb, pp): numerator and denominator scaled by e^{-pp}, where pp
tracks the running maximum exponent, so nothing overflows however long the sequence.
"""

from __future__ import annotations

import torch

# exp(NEG_INF_STATE - anything finite) == 0 in float32 and float64 alike.
NEG_INF_STATE = -1e38


def initial_wkv_state(batch: int, channels: int, device=None, dtype=torch.float32):
    """The empty state: no past tokens."""
    aa = torch.zeros(batch, channels, device=device, dtype=dtype)
    bb = torch.zeros(batch, channels, device=device, dtype=dtype)
    pp = torch.full((batch, channels), NEG_INF_STATE, device=device, dtype=dtype)
    return aa, bb, pp


def wkv4_reference(w, u, k, v, state=None):
    """Plain loop over time.

    w, u: (C,) log-decay (already -exp(time_decay)) and bonus.  k, v: (B, T, C), any float dtype.
    state: (aa, bb, pp), each (B, C), or None for the empty state.
    Returns y (B, T, C) and the new state. Accumulation and the state are float32 (float64 when any
    input is float64); y comes back in k's dtype when k is bf16/fp16, like the CUDA kernel's.
    """
    acc = torch.float64 if torch.float64 in (w.dtype, u.dtype, k.dtype, v.dtype) else torch.float32
    out_dtype = k.dtype if k.dtype in (torch.bfloat16, torch.float16) else acc
    B, T, C = k.shape
    w, u, k, v = (t.to(acc) for t in (w, u, k, v))
    if state is None:
        state = initial_wkv_state(B, C, k.device, acc)
    aa, bb, pp = (s.to(acc) for s in state)
    ys = []
    for t in range(T):
        kt, vt = k[:, t], v[:, t]
        # output: past (scaled by e^pp) plus the current token with its bonus u
        ww = u + kt
        p = torch.maximum(pp, ww)
        e1, e2 = torch.exp(pp - p), torch.exp(ww - p)
        ys.append((e1 * aa + e2 * vt) / (e1 * bb + e2))
        # state: decay the past by e^w, add the current token without bonus
        ww = pp + w
        p = torch.maximum(ww, kt)
        e1, e2 = torch.exp(ww - p), torch.exp(kt - p)
        aa, bb, pp = e1 * aa + e2 * vt, e1 * bb + e2, p
    return torch.stack(ys, dim=1).to(out_dtype), (aa, bb, pp)

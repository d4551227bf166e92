"""RWKV-4's block math, written once as pure functions of tensors: the state it carries between chunks,
the two branches (time mix, channel mix) and one whole block step.

Inference (models/rwkv4.py, through the modules of models/rwkv4_net.py) and training (rwkvbench/train)
both run `block_step`, eager or compiled: one function of tensors, compiled once, serves every layer.
Matrices may be fp32, bf16 or fp16; the residual stream, layer norms and the WKV state stay fp32.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

from rwkvbench.kernels import initial_wkv_state, norm_shift, wkv4


@dataclass
class RWKV4State:
    """Per layer, per sequence: the last ln1 output (time-mix shift), the WKV numerator, denominator and
    max exponent, and the last ln2 output (channel-mix shift). Each tensor is (n_layer, B, C) fp32."""

    att_x: torch.Tensor
    att_a: torch.Tensor
    att_b: torch.Tensor
    att_p: torch.Tensor
    ffn_x: torch.Tensor

    def tensors(self):
        return [getattr(self, f.name) for f in fields(self)]

    def map(self, fn) -> "RWKV4State":
        return RWKV4State(*(fn(t) for t in self.tensors()))

    @classmethod
    def empty(cls, n_layer: int, batch: int, channels: int, device) -> "RWKV4State":
        zeros = torch.zeros(n_layer, batch, channels, device=device)
        a, b, p = (s.unsqueeze(0).expand(n_layer, -1, -1).clone() for s in initial_wkv_state(batch, channels, device))
        return cls(zeros, a, b, p, zeros.clone())


def _mm(x, weight):
    """x @ weight.T in the weight's dtype (fp32, bf16 or fp16)."""
    return F.linear(x.to(weight.dtype), weight)


def time_mix(xk, xv, xr, wkv_state, decay, first, W_k, W_v, W_r, W_o):
    """The attention-like branch on its token-shifted inputs (one per linear layer)."""
    k = _mm(xk, W_k)
    v = _mm(xv, W_v)
    r = torch.sigmoid(_mm(xr, W_r))
    y, wkv_state = wkv4(-torch.exp(decay), first, k, v, wkv_state)
    return _mm(r * y, W_o), wkv_state


def channel_mix(xk, xr, W_k, W_r, W_v):
    """The feed-forward branch on its token-shifted inputs."""
    k = torch.square(torch.relu(_mm(xk, W_k)))
    r = torch.sigmoid(_mm(xr, W_r))
    return r * _mm(k, W_v)


def block_step(x, att_x, a, b, p, ffn_x, ln1_w, ln1_b, ln2_w, ln2_b, att_weights, ffn_weights):
    """One block as a pure function of tensors: compiled once, it serves every layer (same shapes).
    The residual x is fp32; each branch reads it through norm_shift (layer norm, token shift, one mix
    per linear layer; the first branch's output is added on the way into the second's)."""
    decay, first, *att_mixes, W_k, W_v, W_r, W_o = att_weights
    *ffn_mixes, F_k, F_r, F_v = ffn_weights
    (xk, xv, xr), att_x, _ = norm_shift(x, None, ln1_w, ln1_b, att_x, att_mixes, W_k.dtype)
    att, (a, b, p) = time_mix(xk, xv, xr, (a, b, p), decay, first, W_k, W_v, W_r, W_o)
    (xk, xr), ffn_x, x = norm_shift(x, att, ln2_w, ln2_b, ffn_x, ffn_mixes, F_k.dtype)
    return x + channel_mix(xk, xr, F_k, F_r, F_v), att_x, a, b, p, ffn_x

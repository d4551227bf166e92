"""RWKV-4's token-mixing inputs, written once in plain PyTorch: residual add, layer norm, token shift
and the per-channel mixes. The fused CUDA kernel (csrc/norm_shift.cu) is tested against this.

Each branch of a block reads the layer-normed residual stream "shifted": every channel interpolates
between the previous token and this one, with one mix vector per linear layer the branch feeds.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def norm_shift_reference(x, add, weight, bias, last, mixes, dtype):
    """x (B, T, C) float32 (float64 for references), plus `add` (B, T, C) when given (a branch output,
    any dtype); layer norm with weight, bias; `last` (B, C) is the normed token before the chunk.
    Returns ([lerp(prev, normed, mix).to(dtype) for each mix], the last token's normed vector (B, C),
    x + add)."""
    if add is not None:
        x = x + add
    normed = F.layer_norm(x, x.shape[-1:], weight, bias, 1e-5)
    prev = torch.cat([last.unsqueeze(1), normed[:, :-1]], dim=1)
    return [torch.lerp(prev, normed, mix).to(dtype) for mix in mixes], normed[:, -1], x

"""The fused add + layer norm + token shift kernel (csrc/norm_shift.cu) with the reference's signature.
Registered as an op (with a shape-only fake) so that code tracing through it under torch.compile keeps
it whole; the model calls it in eager mode only (kernels/dispatch.py says why)."""

from __future__ import annotations

from typing import Optional

import torch

from rwkvbench.kernels.cuda_build import load_extension


@torch.library.custom_op("rwkvbench::norm_shift", mutates_args=())
def norm_shift_op(x: torch.Tensor, add: Optional[torch.Tensor], weight: torch.Tensor, bias: torch.Tensor,
                  last: torch.Tensor, mixes: list[torch.Tensor], dtype: torch.dtype
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    out, ln_last, x_out = load_extension().norm_shift(x, add, weight, bias, last, mixes, dtype)
    return out, ln_last, x_out


@norm_shift_op.register_fake
def _(x, add, weight, bias, last, mixes, dtype):
    B, T, C = x.shape
    x_out = torch.empty_like(x) if add is not None else x.new_empty(0)
    return x.new_empty((len(mixes), B, T, C), dtype=dtype), x.new_empty((B, C)), x_out


def norm_shift_cuda(x, add, weight, bias, last, mixes, dtype):
    """Same contract as norm_shift_reference."""
    if add is not None and add.dtype != dtype:
        add = add.to(dtype)
    mixes = [m.reshape(-1).contiguous() for m in mixes]
    out, ln_last, x_out = norm_shift_op(x.contiguous(), add if add is None else add.contiguous(), weight, bias,
                                        last.contiguous(), mixes, dtype)
    return list(out.unbind(0)), ln_last, (x_out if add is not None else x)

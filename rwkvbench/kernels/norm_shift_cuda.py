"""The fused add + layer norm + token shift kernel (csrc/norm_shift.cu) with the reference's signature.
The model calls it in eager mode only (kernels/dispatch.py says why), so it is a plain call, not an op
for torch.compile."""

from __future__ import annotations

from rwkvbench.kernels.cuda_build import load_extension


def norm_shift_cuda(x, add, weight, bias, last, mixes, dtype):
    """Same contract as norm_shift_reference; `add` is taken in `dtype` (the model's branch outputs are)."""
    if add is not None:
        add = add.to(dtype).contiguous()
    mixes = [m.reshape(-1).contiguous() for m in mixes]
    out, ln_last, x_out = load_extension().norm_shift(x.contiguous(), add, weight, bias, last.contiguous(), mixes, dtype)
    return list(out.unbind(0)), ln_last, (x_out if add is not None else x)

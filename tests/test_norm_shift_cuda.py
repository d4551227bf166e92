"""The fused add + layer norm + token shift kernel (csrc/norm_shift.cu) against the plain reference in
float64: every output dtype, with and without the residual add, widths on and off the block size,
one-token and long chunks. GPU tests skip without CUDA."""

import pytest
import torch

from conftest import rel_err
from rwkvbench.kernels.norm_shift_reference import norm_shift_reference

DTYPES = {"fp32": (torch.float32, 2e-6), "fp16": (torch.float16, 2e-3), "bf16": (torch.bfloat16, 1e-2)}


def inputs(B, T, C, n_mix, add_dtype, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, C, generator=g) * 3 + 0.5  # a residual stream with an offset: the mean matters
    add = torch.randn(B, T, C, generator=g).to(add_dtype) if add_dtype is not None else None
    weight, bias = 1 + 0.5 * torch.randn(C, generator=g), 0.1 * torch.randn(C, generator=g)
    last = torch.randn(B, C, generator=g)
    mixes = [torch.rand(1, 1, C, generator=g) for _ in range(n_mix)]  # both sides of 0.5: both lerp forms
    return x, add, weight, bias, last, mixes


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("with_add", [False, True])
@pytest.mark.parametrize("B,T,C,n_mix", [(2, 37, 256, 3), (1, 2, 33, 2), (3, 300, 2048, 3), (2, 1, 520, 1)])
def test_norm_shift_kernel_matches_float64_reference(dtype, with_add, B, T, C, n_mix):
    from rwkvbench.kernels.norm_shift_cuda import norm_shift_cuda

    out_dtype, tol = DTYPES[dtype]
    args = inputs(B, T, C, n_mix, out_dtype if with_add else None, seed=B * T * C)
    ref_mixed, ref_last, ref_x = norm_shift_reference(*(a.double() if torch.is_tensor(a) else a for a in args[:5]),
                                                      [m.double() for m in args[5]], torch.float64)
    x, add, weight, bias, last, mixes = args
    mixed, ln_last, x_out = norm_shift_cuda(x.cuda(), None if add is None else add.cuda(), weight.cuda(), bias.cuda(),
                                            last.cuda(), [m.cuda() for m in mixes], out_dtype)
    assert len(mixed) == n_mix
    for i, (got, want) in enumerate(zip(mixed, ref_mixed)):
        assert got.dtype == out_dtype and got.shape == (B, T, C)
        assert rel_err(got.cpu(), want) <= tol, f"mix {i}"
    assert rel_err(ln_last.cpu(), ref_last) <= 2e-6
    assert rel_err(x_out.cpu(), ref_x) <= 1e-7


@pytest.mark.gpu
def test_norm_shift_rejects_a_wrong_shape():
    from rwkvbench.kernels.norm_shift_cuda import norm_shift_cuda

    x, _, weight, bias, last, mixes = (t.cuda() if torch.is_tensor(t) else t for t in inputs(2, 4, 64, 2, None, 0))
    with pytest.raises(RuntimeError, match="norm_shift: last has shape"):
        norm_shift_cuda(x, None, weight, bias, last[:1], [m.cuda() for m in mixes], torch.float16)

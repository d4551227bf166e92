"""The CUDA WKV kernel as an autograd Function, with the reference's signature."""

from __future__ import annotations

import torch

from rwkvbench.kernels.cuda_build import load_extension
from rwkvbench.kernels.wkv_reference import initial_wkv_state


class WKV4Function(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w, u, k, v, aa, bb, pp):
        ext = load_extension()
        needs_grad = any(ctx.needs_input_grad)
        y, aa_out, bb_out, pp_out, seg_states = ext.forward(w, u, k, v, aa, bb, pp, needs_grad)
        if needs_grad:
            ctx.save_for_backward(w, u, k, v, seg_states, pp_out)
        return y, aa_out, bb_out, pp_out

    @staticmethod
    def backward(ctx, gy, g_aa, g_bb, g_pp):
        # g_pp needs no term of its own: (aa, bb, pp) stands for (aa e^pp, bb e^pp), and everything
        # downstream depends on those products only, so g_aa and g_bb already carry it.
        w, u, k, v, seg_states, pp_out = ctx.saved_tensors
        if g_aa is not None or g_bb is not None:
            g_aa = torch.zeros_like(pp_out) if g_aa is None else g_aa.contiguous()
            g_bb = torch.zeros_like(pp_out) if g_bb is None else g_bb.contiguous()
        gy = torch.zeros_like(k) if gy is None else gy.to(k.dtype).contiguous()
        gk, gv, gw, gu, ga, gb, gp = load_extension().backward(w, u, k, v, gy, seg_states, pp_out, g_aa, g_bb)
        return gw, gu, gk, gv, ga, gb, gp


@torch.library.custom_op("rwkvbench::wkv4_forward", mutates_args=())
def wkv4_forward_op(w: torch.Tensor, u: torch.Tensor, k: torch.Tensor, v: torch.Tensor, aa: torch.Tensor,
                    bb: torch.Tensor, pp: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The forward kernel as an opaque op, so torch.compile keeps it whole inside a compiled block."""
    y, aa, bb, pp, _ = load_extension().forward(w, u, k, v, aa, bb, pp, False)
    return y, aa, bb, pp


@wkv4_forward_op.register_fake
def _(w, u, k, v, aa, bb, pp):
    return torch.empty_like(k), torch.empty_like(aa), torch.empty_like(bb), torch.empty_like(pp)


def wkv4_cuda(w, u, k, v, state=None):
    """Same contract as wkv4_reference; y comes back in k's dtype, the state in float32."""
    if not torch.compiler.is_compiling() and load_extension() is None:
        raise RuntimeError("the CUDA WKV kernel is not available (see the warning above for why)")
    w, u = w.float().contiguous(), u.float().contiguous()
    if v.dtype != k.dtype:
        v = v.to(k.dtype)
    if state is None and not torch.is_grad_enabled():  # the kernel starts from the empty state itself
        y, aa, bb, pp, _ = load_extension().forward(w, u, k.contiguous(), v.contiguous(), None, None, None, False)
        return y, (aa, bb, pp)
    if state is None:
        state = initial_wkv_state(k.shape[0], k.shape[2], k.device)
    aa, bb, pp = (s.float().contiguous() for s in state)
    if not torch.is_grad_enabled():
        y, aa, bb, pp = wkv4_forward_op(w, u, k.contiguous(), v.contiguous(), aa, bb, pp)
        return y, (aa, bb, pp)
    y, aa, bb, pp = WKV4Function.apply(w, u, k.contiguous(), v.contiguous(), aa, bb, pp)
    return y, (aa, bb, pp)

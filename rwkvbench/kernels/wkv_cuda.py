"""The CUDA WKV kernel as torch custom ops, with the reference's signature (`wkv4_cuda`).

Three ops: the forward alone (inference), the forward that also saves what the backward needs, and the
backward. The saving forward carries the backward as its registered autograd formula, so gradients flow
in eager mode and inside torch.compile alike (a compiled training step keeps both kernels whole).
"""

from __future__ import annotations

from typing import Optional

import torch

from rwkvbench.kernels.cuda_build import load_extension
from rwkvbench.kernels.dispatch import needs_grad
from rwkvbench.kernels.wkv_reference import initial_wkv_state

# Time steps per backward segment: the saving forward stores the state at the start of each
# (csrc/wkv4.h, WKV4_BWD_L; the shapes of the compile-time stand-ins below depend on it).
BACKWARD_SEGMENT = 8

Tensor = torch.Tensor


@torch.library.custom_op("rwkvbench::wkv4_forward", mutates_args=())
def wkv4_forward_op(w: Tensor, u: Tensor, k: Tensor, v: Tensor, aa: Tensor, bb: Tensor,
                    pp: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The forward kernel as an opaque op, so torch.compile keeps it whole inside a compiled block."""
    y, aa, bb, pp, _ = load_extension().forward(w, u, k, v, aa, bb, pp, False)
    return y, aa, bb, pp


@wkv4_forward_op.register_fake
def _(w, u, k, v, aa, bb, pp):
    return torch.empty_like(k), torch.empty_like(aa), torch.empty_like(bb), torch.empty_like(pp)


@torch.library.custom_op("rwkvbench::wkv4_forward_saving", mutates_args=())
def wkv4_forward_saving_op(w: Tensor, u: Tensor, k: Tensor, v: Tensor, aa: Tensor, bb: Tensor,
                           pp: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The forward kernel, also returning the state at the start of every backward segment."""
    y, aa, bb, pp, seg_states = load_extension().forward(w, u, k, v, aa, bb, pp, True)
    return y, aa, bb, pp, seg_states


@wkv4_forward_saving_op.register_fake
def _(w, u, k, v, aa, bb, pp):
    B, T, C = k.shape
    segments = (T + BACKWARD_SEGMENT - 1) // BACKWARD_SEGMENT
    seg_states = k.new_empty((3, B, segments, C), dtype=torch.float32)
    return torch.empty_like(k), torch.empty_like(aa), torch.empty_like(bb), torch.empty_like(pp), seg_states


@torch.library.custom_op("rwkvbench::wkv4_backward", mutates_args=())
def wkv4_backward_op(w: Tensor, u: Tensor, k: Tensor, v: Tensor, gy: Tensor, seg_states: Tensor, pp_out: Tensor,
                     g_aa: Optional[Tensor], g_bb: Optional[Tensor]
                     ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Gradients of k, v, w, u and of the initial state (aa, bb, pp), from gy and the final state's."""
    gk, gv, gw, gu, ga, gb, gp = load_extension().backward(w, u, k, v, gy, seg_states, pp_out, g_aa, g_bb)
    return gk, gv, gw, gu, ga, gb, gp


@wkv4_backward_op.register_fake
def _(w, u, k, v, gy, seg_states, pp_out, g_aa, g_bb):
    state = [torch.empty_like(pp_out) for _ in range(3)]
    return (torch.empty_like(k), torch.empty_like(v), torch.empty_like(w), torch.empty_like(u), *state)


def _save_for_backward(ctx, inputs, output):
    w, u, k, v, _, _, _ = inputs
    _, _, _, pp_out, seg_states = output
    ctx.save_for_backward(w, u, k, v, seg_states, pp_out)


def _backward(ctx, gy, g_aa, g_bb, g_pp, g_seg_states):
    # g_pp needs no term of its own: (aa, bb, pp) stands for (aa e^pp, bb e^pp), and everything
    # downstream depends on those products only, so g_aa and g_bb already carry it.
    w, u, k, v, seg_states, pp_out = ctx.saved_tensors
    if g_aa is not None or g_bb is not None:
        g_aa = torch.zeros_like(pp_out) if g_aa is None else g_aa.contiguous()
        g_bb = torch.zeros_like(pp_out) if g_bb is None else g_bb.contiguous()
    gy = torch.zeros_like(k) if gy is None else gy.to(k.dtype).contiguous()
    gk, gv, gw, gu, ga, gb, gp = wkv4_backward_op(w, u, k, v, gy, seg_states, pp_out, g_aa, g_bb)
    return gw, gu, gk, gv, ga, gb, gp


wkv4_forward_saving_op.register_autograd(_backward, setup_context=_save_for_backward)


def wkv4_cuda(w, u, k, v, state=None):
    """Same contract as wkv4_reference; y comes back in k's dtype, the state in float32."""
    if not torch.compiler.is_compiling() and load_extension() is None:
        raise RuntimeError("the CUDA WKV kernel is not available (see the warning above for why)")
    w, u = w.float().contiguous(), u.float().contiguous()
    if v.dtype != k.dtype:
        v = v.to(k.dtype)
    k, v = k.contiguous(), v.contiguous()
    grad = needs_grad(w, u, k, v, *(state if state is not None else ()))
    if state is None and not grad:  # the kernel starts from the empty state itself
        y, aa, bb, pp, _ = load_extension().forward(w, u, k, v, None, None, None, False)
        return y, (aa, bb, pp)
    if state is None:
        state = initial_wkv_state(k.shape[0], k.shape[2], k.device)
    aa, bb, pp = (s.float().contiguous() for s in state)
    if not grad:
        y, aa, bb, pp = wkv4_forward_op(w, u, k, v, aa, bb, pp)
        return y, (aa, bb, pp)
    y, aa, bb, pp, _ = wkv4_forward_saving_op(w, u, k, v, aa, bb, pp)
    return y, (aa, bb, pp)

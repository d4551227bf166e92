"""Gradients through the kernels' dispatch, as training needs them.

On CPU: the layer norm + token shift kernel (no backward) is never used where autograd records, and the
WKV ops' autograd wiring (the saving forward, its registered backward, the compile-time stand-ins) is
exercised with a stand-in extension that computes the kernels' calling convention with the reference.
On GPU: the real kernels inside a whole RWKV-4 against float64 autograd of the reference, eager and
compiled.
"""

import concurrent.futures
import math

import pytest
import torch

from conftest import rel_err
from rwkvbench.kernels import dispatch, initial_wkv_state, wkv4_reference
from rwkvbench.kernels import wkv_cuda
from rwkvbench.kernels.norm_shift_reference import norm_shift_reference

gpu = pytest.mark.gpu


def norm_shift_inputs(B=2, T=5, C=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, C, generator=g, dtype=torch.float64)
    add = torch.randn(B, T, C, generator=g, dtype=torch.float64)
    weight, bias = 1 + 0.1 * torch.randn(C, generator=g, dtype=torch.float64), torch.randn(C, generator=g, dtype=torch.float64)
    last = torch.randn(B, C, generator=g, dtype=torch.float64)
    mixes = [torch.rand(1, 1, C, generator=g, dtype=torch.float64) for _ in range(3)]
    return x, add, weight, bias, last, mixes


def detached_kernel(calls):
    """Stands in for the CUDA norm_shift kernel: right values, but (like the extension) no backward."""
    def kernel(x, add, weight, bias, last, mixes, dtype):
        calls.append(1)
        with torch.no_grad():
            out, ln_last, x_out = norm_shift_reference(x, add, weight, bias, last, mixes, dtype)
        return [o.detach() for o in out], ln_last.detach(), x_out.detach()
    return kernel


def test_norm_shift_takes_the_reference_where_autograd_records(monkeypatch):
    calls = []
    monkeypatch.setattr(dispatch, "use_cuda_kernel", lambda t: True)
    monkeypatch.setattr("rwkvbench.kernels.norm_shift_cuda.norm_shift_cuda", detached_kernel(calls))
    inputs = norm_shift_inputs()
    with torch.no_grad():  # inference: the kernel
        dispatch.norm_shift(*inputs, torch.float64)
    assert len(calls) == 1
    leaves = [t.clone().requires_grad_() for t in inputs[:5]] + [m.clone().requires_grad_() for m in inputs[5]]
    ref_leaves = [t.detach().clone().requires_grad_() for t in leaves]

    def loss(fn, ls):
        out, ln_last, x_out = fn(*ls[:5], ls[5:], torch.float64)
        return sum((o * (i + 1)).sum() for i, o in enumerate(out)) + ln_last.square().sum() + x_out.sin().sum()

    grads = torch.autograd.grad(loss(dispatch.norm_shift, leaves), leaves)
    ref = torch.autograd.grad(loss(norm_shift_reference, ref_leaves), ref_leaves)
    assert len(calls) == 1  # the kernel was not called with grad
    for a, b in zip(grads, ref):
        assert torch.equal(a, b)


class ReferenceExtension:
    """The compiled module's forward/backward calling convention, computed by the float reference on
    CPU, so the custom ops' wiring runs without a GPU. The forward keeps the initial state in the first
    segment slot, which is all this backward needs (the kernel keeps one per segment)."""

    def forward(self, w, u, k, v, aa, bb, pp, save_seg_states):
        B, T, C = k.shape
        state = initial_wkv_state(B, C, k.device) if aa is None else (aa, bb, pp)
        y, (aa_out, bb_out, pp_out) = wkv4_reference(w, u, k, v, state)
        seg_states = torch.zeros(3, B, math.ceil(T / wkv_cuda.BACKWARD_SEGMENT), C) if save_seg_states else torch.empty(0)
        if save_seg_states:
            seg_states[:, :, 0] = torch.stack(state)
        return y, aa_out, bb_out, pp_out, seg_states

    def backward(self, w, u, k, v, gy, seg_states, pp_out, g_aa, g_bb):
        # autograd is switched off below a custom op's autograd layer, per thread: take the reference's
        # gradients on a fresh thread
        def grads():
            leaves = [t.detach().clone().requires_grad_() for t in (k, v, w, u, *seg_states[:, :, 0])]
            y, (aa_out, bb_out, _) = wkv4_reference(leaves[2], leaves[3], leaves[0], leaves[1], leaves[4:])
            loss = (y * gy).sum()
            if g_aa is not None:
                loss = loss + (aa_out * g_aa).sum() + (bb_out * g_bb).sum()
            return torch.autograd.grad(loss, leaves, allow_unused=True, materialize_grads=True)

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return list(pool.submit(grads).result())


def wkv_inputs(B=2, T=19, C=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = -torch.exp(torch.empty(C).uniform_(-3, 1, generator=g))
    u = torch.randn(C, generator=g) * 0.5
    k, v = torch.randn(B, T, C, generator=g), torch.randn(B, T, C, generator=g)
    _, state = wkv4_reference(w, u, torch.randn(B, 3, C, generator=g), torch.randn(B, 3, C, generator=g))
    return w, u, k, v, state


def wkv_grads(fn, inputs, with_state_grads):
    w, u, k, v, state = inputs
    leaves = [t.clone().requires_grad_() for t in (w, u, k, v, *state)]
    y, (aa, bb, _) = fn(*leaves[:4], tuple(leaves[4:]))
    g = torch.Generator().manual_seed(1)
    loss = (y * torch.randn(y.shape, generator=g)).sum()
    if with_state_grads:
        loss = loss + (aa * torch.randn(aa.shape, generator=g)).sum() + (bb * torch.randn(bb.shape, generator=g)).sum()
    return (y, aa, bb), torch.autograd.grad(loss, leaves[:6])  # pp: a free exponent (see test_wkv_cuda)


@pytest.mark.parametrize("with_state_grads", [False, True])
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_wkv_ops_carry_the_backward_eager_and_compiled(monkeypatch, compiled, with_state_grads):
    monkeypatch.setattr(wkv_cuda, "load_extension", lambda: ReferenceExtension())
    inputs = wkv_inputs()
    fn = wkv_cuda.wkv4_cuda
    if compiled:  # aot_eager: dynamo + AOT autograd (the stand-ins' shapes, the registered backward), no codegen
        torch._dynamo.reset()
        fn = torch.compile(wkv_cuda.wkv4_cuda, backend="aot_eager", fullgraph=True)
    out, grads = wkv_grads(fn, inputs, with_state_grads)
    ref_out, ref_grads = wkv_grads(wkv4_reference, inputs, with_state_grads)
    for a, b in zip(out, ref_out):
        assert rel_err(a, b) <= 1e-6
    for name, a, b in zip(["w", "u", "k", "v", "aa", "bb"], grads, ref_grads):
        assert rel_err(a, b) <= 1e-6, name


def test_wkv_without_grad_takes_the_forward_only_op(monkeypatch):
    calls = []

    class Counting(ReferenceExtension):
        def forward(self, *args):
            calls.append(args[-1])
            return super().forward(*args)

    monkeypatch.setattr(wkv_cuda, "load_extension", lambda: Counting())
    w, u, k, v, state = wkv_inputs()
    wkv_cuda.wkv4_cuda(w, u, k, v, state)  # nothing requires grad
    wkv_cuda.wkv4_cuda(w, u, k.requires_grad_(), v, state)
    assert calls == [False, True]  # segment states are saved only when a backward will need them


# ---- GPU: the real kernels inside a whole model -------------------------------------------------------
def rwkv_grads(net, ids, targets, step=None):
    from rwkvbench.models.rwkv4_block import block_step
    from rwkvbench.train.loss import linear_cross_entropy

    net.zero_grad(set_to_none=True)
    x = net.features(ids, step or block_step)
    loss = linear_cross_entropy(x, net.head.weight, targets)
    loss.backward()
    return loss.detach(), {n: p.grad.detach().double().cpu() for n, p in net.named_parameters()}


@gpu
@pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])
def test_rwkv_training_gradients_through_cuda_kernels_match_float64_reference(compiled):
    from rwkvbench.models import checkpoints as ck
    from rwkvbench.models.rwkv4_block import block_step
    from rwkvbench.models.rwkv4_net import RWKV4

    shape = ck.RWKV4Shape(n_layer=2, n_embd=64, vocab_size=128, dim_ffn=256)
    net = RWKV4(shape)
    net.load_state_dict(ck.random_rwkv4(shape, seed=0))  # random matrices: every gradient is nonzero
    ids = torch.randint(0, 128, (3, 300), generator=torch.Generator().manual_seed(0))
    targets = torch.roll(ids, -1, 1)
    ref_loss, ref = rwkv_grads(net.double(), ids, targets)  # CPU float64: the reference path
    net = net.float().cuda()
    torch._dynamo.reset()
    step = torch.compile(block_step) if compiled else None
    loss, grads = rwkv_grads(net, ids.cuda(), targets.cuda(), step)
    assert abs(loss.item() - ref_loss.item()) <= 1e-5 * ref_loss.item()
    for name, g in grads.items():
        assert rel_err(g, ref[name]) <= (1e-4 if compiled else 1e-5), name


@gpu
def test_compile_time_stand_in_has_the_kernels_segment_states_shape():
    """The saving forward's fake (used by torch.compile) computes the segment count from BACKWARD_SEGMENT."""
    w, u, k, v, state = wkv_inputs(T=37)
    out = wkv_cuda.wkv4_forward_saving_op(w.cuda(), u.cuda(), k.cuda(), v.cuda(), *(s.cuda() for s in state))
    assert out[4].shape == (3, 2, math.ceil(37 / wkv_cuda.BACKWARD_SEGMENT), 6), "csrc's WKV4_BWD_L != BACKWARD_SEGMENT"

"""The CUDA WKV kernel against the float64 reference: forward, every gradient, state carry, long
sequences, unwritten outputs. GPU tests skip without CUDA; the compile check runs wherever nvcc is."""

import shutil
import subprocess

import pytest
import torch

from conftest import rel_err
from rwkvbench.kernels import initial_wkv_state, wkv4_reference
from rwkvbench.kernels.cuda_build import csrc_dir

gpu = pytest.mark.gpu


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
@pytest.mark.parametrize("source", ["wkv4_kernels.cu", "norm_shift.cu", "rwkv4_decode.cu"])
def test_kernel_source_compiles_with_nvcc(tmp_path, source):
    """csrc/ has no torch headers in its kernels: a syntax error shows here, without a GPU."""
    out = subprocess.run(["nvcc", "-c", "-std=c++17", "-O3", "-gencode=arch=compute_90,code=sm_90",
                          str(csrc_dir() / source), "-o", str(tmp_path / "kernel.o")],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]


def inputs(B, T, C, dtype, seed, with_state=True, device="cuda"):
    g = torch.Generator(device="cpu").manual_seed(seed)
    time_decay = torch.empty(C).uniform_(-6, 3, generator=g)
    w = -torch.exp(time_decay)
    u = torch.randn(C, generator=g) * 0.5
    k = (torch.randn(B, T, C, generator=g) * 2).to(dtype)
    v = torch.randn(B, T, C, generator=g).to(dtype)
    state = None
    if with_state:  # a real state: the reference run over a short random prefix
        kp, vp = torch.randn(B, 7, C, generator=g) * 2, torch.randn(B, 7, C, generator=g)
        _, state = wkv4_reference(w, u, kp, vp)
        state = tuple(s.to(device) for s in state)
    return w.to(device), u.to(device), k.to(device), v.to(device), state


def run_with_grads(fn, w, u, k, v, state, gy, ga, gb, dtype, anchor=None):
    """Forward, then grads of <y, gy> + <A_out, ga> + <B_out, gb> w.r.t. everything, where A_out =
    aa_out e^(pp_out - anchor) is the represented value ((aa, bb, pp) is redundant: only aa e^pp and
    bb e^pp mean anything, so a loss on aa_out alone would depend on the implementation's choice of pp)."""
    leaves = [t.detach().clone().to(dtype).requires_grad_() for t in (w, u)] + \
             [t.detach().clone().to(dtype).requires_grad_() for t in (k, v)] + \
             [s.detach().clone().to(dtype).requires_grad_() for s in state]
    w_, u_, k_, v_, aa, bb, pp = leaves
    y, (aa_o, bb_o, pp_o) = fn(w_, u_, k_, v_, (aa, bb, pp))
    scale = torch.exp(pp_o.double() - (pp_o.detach().double() if anchor is None else anchor))
    loss = (y.double() * gy).sum() + (aa_o.double() * scale * ga).sum() + (bb_o.double() * scale * gb).sum()
    grads = torch.autograd.grad(loss, leaves)
    return (y, aa_o, bb_o, pp_o), grads


SHAPES = [(1, 1, 33), (2, 2, 1), (3, 31, 768), (1, 1000, 33), (8, 1000, 2048), (2, 4097, 768), (1, 4097, 2048),
          (4, 31, 2048), (5, 2, 768), (1, 4097, 1)]
NAMES = ["w", "u", "k", "v", "aa", "bb", "pp"]


@gpu
@pytest.mark.parametrize("B,T,C", SHAPES, ids=str)
def test_forward_and_grads_match_float64_reference_fp32(B, T, C):
    from rwkvbench.kernels.wkv_cuda import wkv4_cuda

    w, u, k, v, state = inputs(B, T, C, torch.float32, seed=B * 7 + T + C)
    g = torch.Generator(device="cpu").manual_seed(T)
    gy = torch.randn(B, T, C, generator=g, dtype=torch.float64).cuda()
    ga, gb = (torch.randn(B, C, generator=g, dtype=torch.float64).cuda() for _ in range(2))
    ref_out, ref_grads = run_with_grads(wkv4_reference, w, u, k, v, state, gy, ga, gb, torch.float64)
    anchor = ref_out[3].detach()
    ref_out, ref_grads = run_with_grads(wkv4_reference, w, u, k, v, state, gy, ga, gb, torch.float64, anchor)
    out, grads = run_with_grads(wkv4_cuda, w, u, k, v, state, gy, ga, gb, torch.float32, anchor)
    for name, a, b in zip(["y", "aa", "bb"], out, ref_out):
        assert rel_err(a, b) <= 1e-5, name
    # pp is a free exponent: compare the represented values aa*e^pp, bb*e^pp instead
    for a, p, b, q in [(out[1], out[3], ref_out[1], ref_out[3]), (out[2], out[3], ref_out[2], ref_out[3])]:
        assert rel_err(a.double() * torch.exp(p.double() - q), b) <= 1e-5
    for name, a, b in zip(NAMES, grads, ref_grads):
        assert torch.isfinite(a).all(), name
        assert rel_err(a, b) <= 1e-5, name


@gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("B,T,C", [(2, 1000, 768), (1, 4097, 33), (8, 31, 2048)], ids=str)
def test_half_inputs_match_float64_reference(B, T, C, dtype):
    from rwkvbench.kernels.wkv_cuda import wkv4_cuda

    w, u, k, v, state = inputs(B, T, C, dtype, seed=T + C)
    g = torch.Generator(device="cpu").manual_seed(C)
    gy = torch.randn(B, T, C, generator=g).to(dtype).double().cuda()
    zero = torch.zeros(B, C, dtype=torch.float64, device="cuda")

    def kernel(w_, u_, k_, v_, s):
        return wkv4_cuda(w_.float(), u_.float(), k_.to(dtype), v_.to(dtype), s)

    out, grads = run_with_grads(kernel, w, u, k, v, state, gy, zero, zero, torch.float32)
    assert out[0].dtype == dtype
    ref_out, ref_grads = run_with_grads(wkv4_reference, w, u, k, v, state, gy, zero, zero, torch.float64)
    assert rel_err(out[0], ref_out[0]) <= 1e-2
    for name, a, b in zip(NAMES, grads, ref_grads):
        assert rel_err(a, b) <= 1e-2, name


@gpu
def test_chunked_calls_with_state_carry_equal_one_call():
    from rwkvbench.kernels.wkv_cuda import wkv4_cuda

    w, u, k, v, _ = inputs(3, 3000, 512, torch.float32, seed=1, with_state=False)
    y, state = wkv4_cuda(w, u, k, v, initial_wkv_state(3, 512, "cuda"))
    with torch.no_grad():  # no state given: the kernel starts from the empty state itself
        y_nostate, _ = wkv4_cuda(w, u, k, v)
    # equal to rounding: look-back combines carries in an order that depends on timing
    assert rel_err(y_nostate, y) <= 1e-6
    parts, s = [], None
    for lo, hi in [(0, 1), (1, 129), (129, 1000), (1000, 1001), (1001, 3000)]:
        yi, s = wkv4_cuda(w, u, k[:, lo:hi], v[:, lo:hi], s)
        parts.append(yi)
    assert rel_err(torch.cat(parts, 1), y) <= 1e-5
    for a, b in zip(s[:2], state[:2]):
        assert rel_err(a * torch.exp(s[2] - state[2]), b) <= 1e-5


@gpu
def test_million_steps_bf16_extreme_decays_stay_finite():
    from rwkvbench.kernels.wkv_cuda import wkv4_cuda

    C, T = 64, 1_000_000
    g = torch.Generator(device="cpu").manual_seed(0)
    time_decay = torch.linspace(-20, 10, C)  # decay per step from e^-2e-9 (none) to e^-22026 (instant)
    w, u = (-torch.exp(time_decay)).cuda(), torch.linspace(-5, 5, C).cuda()
    k = (torch.randn(1, T, C, generator=g) * 8).to(torch.bfloat16).cuda()
    v = (torch.randn(1, T, C, generator=g) * 8).to(torch.bfloat16).cuda()
    y, state = wkv4_cuda(w, u, k, v)
    assert torch.isfinite(y.float()).all()
    assert all(torch.isfinite(s).all() for s in state)
    y32, _ = wkv4_cuda(w, u, k.float(), v.float())
    assert rel_err(y, y32) <= 1e-2
    # and the gradients
    kk, vv = k.detach().requires_grad_(), v.detach().requires_grad_()
    y, _ = wkv4_cuda(w, u, kk, vv)
    y.float().sum().backward()
    assert torch.isfinite(kk.grad.float()).all() and torch.isfinite(vv.grad.float()).all()


@gpu
def test_outputs_fully_written_over_poisoned_memory():
    """The caching allocator hands back freed NaN-filled blocks: any element the kernels skip stays NaN."""
    from rwkvbench.kernels.wkv_cuda import wkv4_cuda

    w, u, k, v, state = inputs(3, 1001, 100, torch.float32, seed=2)
    for _ in range(3):
        poison = torch.full((64 << 20,), float("nan"), device="cuda")
        del poison
        kk, vv = k.clone().requires_grad_(), v.clone().requires_grad_()
        ss = tuple(s.clone().requires_grad_() for s in state)
        y, out_state = wkv4_cuda(w, u, kk, vv, ss)
        assert torch.isfinite(y).all() and all(torch.isfinite(s).all() for s in out_state)
        (y.sum() + out_state[0].sum()).backward()
        assert torch.isfinite(kk.grad).all() and torch.isfinite(vv.grad).all()
        assert all(torch.isfinite(s.grad).all() for s in ss)


@gpu
def test_model_logits_same_through_kernel_and_reference(monkeypatch):
    from rwkvbench import load_model

    model = load_model("rwkv4_tiny", device="cuda", dtype="fp32")
    ids = torch.randint(0, 257, (2, 300), device="cuda")
    fast, _ = model.prefill(ids)
    monkeypatch.setenv("RWKVBENCH_WKV", "reference")
    slow, _ = model.prefill(ids)
    assert rel_err(fast, slow) <= 1e-5

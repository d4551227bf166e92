"""The Triton cross-entropy chunk (kernels/cross_entropy_triton.py) against its plain reference,
train.loss._chunk, on the same logits: loss, gradient, L2Wrap, rows and vocabularies that fill no block;
and the whole fused head + cross-entropy through it against float64 autograd."""

import pytest
import torch

from conftest import rel_err
from rwkvbench.train.loss import _chunk, linear_cross_entropy

pytestmark = pytest.mark.gpu


def inputs(rows, V, C, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, C, generator=g).to("cuda", dtype)
    w = (torch.randn(V, C, generator=g) * 0.3).to("cuda", dtype)
    t = torch.randint(0, V, (rows,), generator=g).cuda()
    return x, w, t


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("l2wrap", [0.0, 1e-4])
# V = 4096: one whole block; the others end in a partial one
@pytest.mark.parametrize("rows,V", [(777, 5003), (4096, 50304), (1, 4096), (300, 70001)])
def test_triton_chunk_equals_reference_chunk(dtype, l2wrap, rows, V):
    chunk_triton = pytest.importorskip("rwkvbench.kernels.cross_entropy_triton").chunk_triton
    x, w, t = inputs(rows, V, 64, dtype)
    n_total = 3 * rows  # a chunk of a larger batch
    loss, grad = chunk_triton(x, w, t, n_total, l2wrap)
    ref_loss, ref_grad = _chunk(x, w, t, n_total, l2wrap)
    assert grad.dtype == dtype and grad.shape == (rows, V)
    assert abs(loss.item() - ref_loss.item()) <= 1e-5 * abs(ref_loss.item())
    # the same float32 values rounded once to the output dtype (bf16: 2^-8 relative); L2Wrap's term is
    # about 1e-3 of the largest gradient here, so the float32 cases are the ones that hold it
    bound = 8e-3 if dtype == torch.bfloat16 else 1e-5
    assert rel_err(grad, ref_grad) <= bound, rel_err(grad, ref_grad)


def test_fused_loss_through_triton_matches_float64():
    chunk_triton = pytest.importorskip("rwkvbench.kernels.cross_entropy_triton").chunk_triton
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 900, 48, generator=g).cuda().requires_grad_()
    w = (torch.randn(3001, 48, generator=g) * 0.2).cuda().requires_grad_()
    t = torch.randint(0, 3001, (2, 900), generator=g).cuda()
    loss = linear_cross_entropy(x, w, t, chunk=500, l2wrap=1e-4, dtype=torch.float32, chunk_fn=chunk_triton)
    gx, gw = torch.autograd.grad(loss, [x, w])
    x64, w64 = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    ref = linear_cross_entropy(x64, w64, t, chunk=500, l2wrap=1e-4)
    rx, rw = torch.autograd.grad(ref, [x64, w64])
    assert abs(loss.item() - ref.item()) <= 1e-5 * ref.item()
    assert rel_err(gx, rx) <= 1e-4 and rel_err(gw, rw) <= 1e-4, (rel_err(gx, rx), rel_err(gw, rw))


@pytest.mark.parametrize("block", [2048, 8192])
def test_l2wrap_term_goes_to_the_first_of_equal_maxima(block):
    """RWKV-LM's L2Wrap adds its term at one column, the row's argmax; where the largest logit repeats
    (common in bf16) the first column takes it, within a block and across blocks."""
    ce = pytest.importorskip("rwkvbench.kernels.cross_entropy_triton")
    g = torch.Generator().manual_seed(2)
    rows, V, l2wrap = 64, 20000, 0.5
    logits = torch.randn(rows, V, generator=g)
    for r in range(rows):  # the max repeated at 2-4 random columns
        logits[r, torch.randperm(V, generator=g)[: 2 + r % 3]] = 6.0 + r % 5
    t = torch.randint(0, V, (rows,), generator=g)
    top, first = logits.max(-1).values, logits.argmax(-1)  # argmax: the first of equal maxima
    expected = torch.softmax(logits.double(), -1)
    expected[torch.arange(rows), t] -= 1
    expected[torch.arange(rows), first] += l2wrap * top.double()
    work = logits.cuda()
    loss = ce.cross_entropy_rows_(work, t.cuda(), rows, l2wrap, block=block)
    assert torch.allclose(loss.cpu().double(), torch.logsumexp(logits.double(), -1) - logits.double()[torch.arange(rows), t],
                          rtol=1e-5)
    assert rel_err(work.cpu().double(), expected / rows) <= 1e-5, rel_err(work.cpu().double(), expected / rows)

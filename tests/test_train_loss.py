"""The fused, chunked head + cross-entropy against torch's unfused one, and RWKV-LM's L2Wrap gradient."""

import pytest
import torch
import torch.nn.functional as F

from rwkvbench.train.loss import linear_cross_entropy, plain_cross_entropy, token_nll


def inputs(N=2, T=13, C=8, V=37, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, T, C, generator=g, dtype=dtype).requires_grad_()
    w = (torch.randn(V, C, generator=g, dtype=dtype) * 0.5).requires_grad_()
    t = torch.randint(0, V, (N, T), generator=g)
    return x, w, t


@pytest.mark.parametrize("chunk", [1, 5, 26, 1000])
def test_equals_torch_cross_entropy_value_and_gradients(chunk):
    x, w, t = inputs()
    loss = linear_cross_entropy(x, w, t, chunk=chunk)
    gx, gw = torch.autograd.grad(loss * 3.0, [x, w])  # an upstream gradient is applied
    x2, w2 = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    ref = F.cross_entropy((x2 @ w2.t()).flatten(0, 1), t.flatten())
    rx, rw = torch.autograd.grad(ref * 3.0, [x2, w2])
    assert torch.allclose(loss, ref, rtol=1e-12)
    assert torch.allclose(gx, rx, rtol=1e-10, atol=1e-14) and torch.allclose(gw, rw, rtol=1e-10, atol=1e-14)
    assert torch.allclose(plain_cross_entropy(x, w, t), ref, rtol=1e-12)


def test_l2wrap_adds_rwkv_lm_gradient_on_each_positions_largest_logit():
    x, w, t = inputs()
    factor = 1e-4
    gx, gw = torch.autograd.grad(linear_cross_entropy(x, w, t, chunk=7, l2wrap=factor), [x, w])
    # RWKV-LM's L2Wrap: the loss unchanged, plus gradient max_logit * factor / (B T) on the argmax logit
    x2, w2 = x.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    logits = x2 @ w2.t()
    top, where = logits.max(-1, keepdim=True)
    extra = torch.zeros_like(logits).scatter_(-1, where, top * factor / t.numel())
    ref = F.cross_entropy(logits.flatten(0, 1), t.flatten())
    rx, rw = torch.autograd.grad([ref, logits], [x2, w2], grad_outputs=[torch.ones(()), extra.detach()])
    assert torch.allclose(gx, rx, rtol=1e-10) and torch.allclose(gw, rw, rtol=1e-10)
    assert not torch.allclose(gx, torch.autograd.grad(linear_cross_entropy(x, w, t), [x])[0])


def test_without_autograd_no_gradients_and_per_token_values():
    x, w, t = inputs()
    nll = token_nll(x, w, t, chunk=4)
    ref = F.cross_entropy((x @ w.t()).flatten(0, 1), t.flatten(), reduction="none").view(t.shape)
    assert nll.shape == t.shape and torch.allclose(nll.double(), ref, rtol=1e-6)
    with torch.no_grad():
        assert torch.allclose(linear_cross_entropy(x, w, t), ref.mean(), rtol=1e-6)


def test_bf16_products_stay_close_and_weight_gradient_keeps_its_dtype():
    x, w, t = inputs(dtype=torch.float32, V=300, C=32, T=50)
    loss = linear_cross_entropy(x, w, t, chunk=32, dtype=torch.bfloat16)
    gx, gw = torch.autograd.grad(loss, [x, w])
    ref = F.cross_entropy((x @ w.t()).flatten(0, 1), t.flatten())
    rx, rw = torch.autograd.grad(ref, [x, w])
    assert gx.dtype == gw.dtype == torch.float32
    assert abs(loss.item() - ref.item()) < 2e-2 * ref.item()
    assert (gx - rx).abs().max() < 2e-2 * rx.abs().max() and (gw - rw).abs().max() < 2e-2 * rw.abs().max()

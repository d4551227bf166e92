"""The WKV reference against the definition (a direct, unstabilised sum in float64)."""

import torch

from conftest import rel_err
from rwkvbench.kernels import wkv4_reference


def wkv_by_definition(w, u, k, v):
    """y_t = (sum_{i<t} e^{(t-1-i)w + k_i} v_i + e^{u+k_t} v_t) / (same with v -> 1), float64."""
    B, T, C = k.shape
    y = torch.empty(B, T, C, dtype=torch.float64)
    for t in range(T):
        i = torch.arange(t, dtype=torch.float64)
        weights = torch.exp((t - 1 - i)[None, :, None] * w + k[:, :t])  # (B, t, C)
        num = (weights * v[:, :t]).sum(1) + torch.exp(u + k[:, t]) * v[:, t]
        den = weights.sum(1) + torch.exp(u + k[:, t])
        y[:, t] = num / den
    return y


def test_reference_matches_definition():
    g = torch.Generator().manual_seed(0)
    B, T, C = 2, 37, 5
    w = -torch.exp(torch.randn(C, generator=g, dtype=torch.float64))
    u = torch.randn(C, generator=g, dtype=torch.float64)
    k = torch.randn(B, T, C, generator=g, dtype=torch.float64)
    v = torch.randn(B, T, C, generator=g, dtype=torch.float64)
    y, _ = wkv4_reference(w, u, k, v)
    assert y.dtype == torch.float64
    assert rel_err(y, wkv_by_definition(w, u, k, v)) < 1e-12


def test_state_carry_equals_one_call():
    g = torch.Generator().manual_seed(1)
    B, T, C = 3, 50, 8
    w = -torch.exp(torch.randn(C, generator=g))
    u = torch.randn(C, generator=g)
    k, v = torch.randn(B, T, C, generator=g) * 3, torch.randn(B, T, C, generator=g)
    y, (a, b, p) = wkv4_reference(w, u, k, v)
    parts, state = [], None
    for lo, hi in [(0, 1), (1, 17), (17, 18), (18, 50)]:
        yi, state = wkv4_reference(w, u, k[:, lo:hi], v[:, lo:hi], state)
        parts.append(yi)
    assert rel_err(torch.cat(parts, 1), y) < 1e-6
    for s, s_ref in zip(state, (a, b, p)):
        assert rel_err(s, s_ref) < 1e-6


def test_no_overflow_with_large_keys():
    C = 4
    w = torch.full((C,), -1e-4)
    u = torch.zeros(C)
    k = torch.full((1, 200, C), 80.0)  # e^80 overflows float32 without the max tracking
    v = torch.randn(1, 200, C)
    y, state = wkv4_reference(w, u, k, v)
    assert torch.isfinite(y).all() and all(torch.isfinite(s).all() for s in state)

"""Random WKV inputs for the kernel benchmarks: decays spread like a trained RWKV-4's, keys with a
realistic range. One recipe, so every script times the same data."""

import torch


def random_wkv_inputs(B: int, T: int, C: int, dtype=torch.float32, grad: bool = False, device="cuda", seed: int = 0):
    g = torch.Generator(device=device).manual_seed(seed)
    w = -torch.exp(torch.empty(C, device=device).uniform_(-6, 3, generator=g))
    u = torch.randn(C, device=device, generator=g) * 0.5
    k = (torch.randn(B, T, C, device=device, generator=g) * 2).to(dtype).requires_grad_(grad)
    v = torch.randn(B, T, C, device=device, generator=g).to(dtype).requires_grad_(grad)
    return w, u, k, v

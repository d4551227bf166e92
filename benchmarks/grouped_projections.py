"""RWKV-4's time mix projects three different inputs (its key, value and receptance mixes) through three
C x C matrices. Would one batched product (torch.bmm over the three) beat three GEMMs? Forward, backward
(input and weight gradients) and the weight gradients alone, bf16, at the ladder's training shapes
(32 x 1024 tokens up to s6's width, 64 x 1024 at s7's). Each variant is captured in a CUDA graph so host
time does not count; medians of CUDA-event timings of the replays.

    python benchmarks/grouped_projections.py [--widths 128 192 256 384 640]

Measured on an H200 (2026-11-24), per layer: the bmm saves 6-8 us of 106-127 us at C=192-256 (0.04 ms a
step at s3), loses on the weight gradients (46 -> 53 us at C=256), and is level at C=640; so block_step keeps
three products (benchmarks/NOTES.md).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from rwkvbench.timing import median_ms


def graphed(fn):
    """fn captured in a CUDA graph (after warm-up on a side stream); returns the replay."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def variants(N: int, C: int, device) -> dict:
    def randn(*shape, grad=False):
        return torch.randn(*shape, device=device, dtype=torch.bfloat16, requires_grad=grad)

    xs = [randn(N, C, grad=True) for _ in range(3)]
    ws = [randn(C, C, grad=True) for _ in range(3)]
    gs = [randn(N, C) for _ in range(3)]
    X = torch.stack([x.detach() for x in xs]).requires_grad_()
    W = torch.stack([w.detach() for w in ws]).requires_grad_()
    G = torch.stack(gs)
    return {
        "three_fwd_bwd": lambda: torch.autograd.grad([F.linear(x, w) for x, w in zip(xs, ws)], xs + ws, gs),
        "bmm_fwd_bwd": lambda: torch.autograd.grad(torch.bmm(X, W.transpose(1, 2)), [X, W], G),
        "three_fwd": lambda: [F.linear(x.detach(), w.detach()) for x, w in zip(xs, ws)],
        "bmm_fwd": lambda: torch.bmm(X.detach(), W.detach().transpose(1, 2)),
        "three_wgrad": lambda: [g.t() @ x.detach() for g, x in zip(gs, xs)],
        "bmm_wgrad": lambda: torch.bmm(G.transpose(1, 2), X.detach()),
    }


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--widths", type=int, nargs="+", default=[128, 192, 256, 384, 640])
    p.add_argument("--repeats", type=int, default=50)
    args = p.parse_args()
    device = torch.device("cuda")
    print(f"{torch.cuda.get_device_name()}: three (N, C) x (C, C) products against one bmm, bf16, us (median)")
    for C in args.widths:
        N = 32768 if C < 640 else 65536  # the ladder's batch: 32 x 1024 tokens to s3, 64 x 1024 from s4
        us = {name: median_ms(graphed(fn), device, args.repeats, 5) * 1e3 for name, fn in variants(N, C, device).items()}
        print(f"C={C:4d} N={N}: " + "  ".join(f"{name} {t:6.1f}" for name, t in us.items()), flush=True)


if __name__ == "__main__":
    main()

"""Where a training step's GPU time goes: the trainer's own compiled step (a benchmarks/train_throughput.py
setting: `compiled` unless --setting says otherwise; `graphs` is the trainer's default) under torch.profiler,
its CUDA kernels summed into a few groups (matrix products, the WKV kernel, attention, fused elementwise, the
optimizer, copies) and the top kernels by time.

    python benchmarks/train_profile.py --family rwkv4 --size s6 [--loss-chunk 8192] [--steps 5]

A guide for throughput work (which part of the step is worth a kernel), not a measurement to publish:
the profiler adds a little overhead; train_throughput.py measures tokens/s and MFU.
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict

import numpy as np
import torch

from rwkvbench.timing import timed_ms
from rwkvbench.train.trainer import train_step
from train_throughput import SETTINGS, prepare  # the same step train_throughput.py times

# kernel name pattern -> group (first match wins)
GROUPS = [
    ("wkv", r"wkv"),
    ("cross-entropy (Triton)", r"cross_entropy"),
    ("attention", r"flash|fmha|attention|sdpa|cudnn"),
    ("matmul", r"gemm|cutlass|sm90_xmma|nvjet|cublas|ampere_|sm80_|xmma"),
    ("optimizer", r"adam|multi_tensor|foreach|norm_kernel|clip"),
    ("fused elementwise (inductor)", r"^triton_"),
    ("copies", r"copy|memcpy|memset|cat|fill"),
    ("reduction / loss", r"reduce|softmax|logsumexp|gather|scatter|index"),
]


def group_of(name: str) -> str:
    for group, pattern in GROUPS:
        if re.search(pattern, name, re.IGNORECASE):
            return group
    return "other"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", default="rwkv4")
    p.add_argument("--size", default="s6")
    p.add_argument("--batch-size", type=int, default=None, help="sequences per step (default: the size's)")
    p.add_argument("--context", type=int, default=1024)
    p.add_argument("--loss-chunk", type=int, default=8192)
    p.add_argument("--setting", default="compiled", choices=sorted(SETTINGS),
                   help="train_throughput.py's setting (graphs: the trainer's default, CUDA graphs)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--top", type=int, default=20)
    p.add_argument("--tokens", default=None, help="a .npy of token ids: a real-text batch instead of random ids")
    p.add_argument("--cpu", action="store_true",
                   help="also the host side: the ops that spend the most CPU time per step (a step the GPU waits on)")
    args = p.parse_args()
    device = torch.device("cuda")
    size, model, optimizer, batch, kw = prepare(args.family, args.size, args.setting, device, args.context,
                                                args.loss_chunk, args.batch_size,
                                                np.load(args.tokens) if args.tokens else None)
    batch_size = len(batch)
    for _ in range(args.warmup):
        train_step(model, optimizer, batch, device, **kw)
    step_ms = timed_ms(lambda: [train_step(model, optimizer, batch, device, **kw) for _ in range(args.steps)],
                       device) / args.steps
    activities = [torch.profiler.ProfilerActivity.CUDA] + ([torch.profiler.ProfilerActivity.CPU] if args.cpu else [])
    with torch.profiler.profile(activities=activities) as prof:
        for _ in range(args.steps):
            train_step(model, optimizer, batch, device, **kw)
        torch.cuda.synchronize()
    kernels = defaultdict(float)
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            kernels[event.name] += event.device_time / 1e3 / args.steps  # ms per step
    total = sum(kernels.values())
    groups = defaultdict(float)
    for name, ms in kernels.items():
        groups[group_of(name)] += ms
    tokens = batch_size * args.context
    flops = model.matmul_flops_per_token(args.context)
    print(f"{args.family} {args.size} ({args.tokens or 'random ids'}; L={size.n_layer}, D={size.n_embd}) "
          f"batch {batch_size} x {args.context}, "
          f"loss chunk {args.loss_chunk}: step {step_ms:.1f} ms (no profiler), {tokens / step_ms * 1e3 / 1e6:.3f}M "
          f"tokens/s, MFU {tokens / step_ms * 1e3 * flops / 989e12:.1%}; kernels {total:.1f} ms/step "
          f"(GPU idle {max(0.0, step_ms - total):.1f} ms)")
    for group, ms in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"  {group:32s} {ms:7.2f} ms  {ms / total:6.1%}")
    if args.cpu:
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top)
        print(f"  host ops by self CPU time ({args.steps} steps):\n{table}")
    print("  top kernels:")
    for name, ms in sorted(kernels.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"    {ms:7.2f} ms  {name[:150]}")


if __name__ == "__main__":
    main()

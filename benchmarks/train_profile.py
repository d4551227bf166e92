"""Where a training step's GPU time goes: the trainer's own compiled step (benchmarks/train_throughput.py's
`compiled` setting) under torch.profiler, its CUDA kernels summed into a few groups (matrix products, the
WKV kernel, attention, fused elementwise, the optimizer, copies) and the top kernels by time.

    python benchmarks/train_profile.py --family rwkv4 --size s6 [--loss-chunk 8192] [--steps 5]

A guide for throughput work (which part of the step is worth a kernel), not a measurement to publish:
the profiler adds a little overhead; train_throughput.py measures tokens/s and MFU.
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict

import torch

from rwkvbench.config import load_option
from rwkvbench.train.families import get_family, padded_vocab
from rwkvbench.train.loss import chunk_fn_for
from rwkvbench.train.optim import make_optimizer
from rwkvbench.train.trainer import train_step

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
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--top", type=int, default=20)
    args = p.parse_args()
    device = torch.device("cuda")
    size = load_option("train/size", args.size)
    recipe = load_option("train/family", args.family)
    vocab = padded_vocab(50277)
    model = get_family(args.family)(recipe, {"n_layer": size.n_layer, "n_embd": size.n_embd}, vocab, 0, device)
    torch._dynamo.reset()
    model.compile()
    chunk_fn = chunk_fn_for(device, True)
    optimizer = make_optimizer(model, recipe, 1e-4, device)
    batch_size = args.batch_size or int(size.batch_size)
    batch = torch.randint(0, 50277, (batch_size, args.context + 1), device=device)
    kw = dict(micro_batch_size=None, amp_dtype=torch.bfloat16, loss_chunk=args.loss_chunk,
              l2wrap=float(recipe.get("l2wrap", 0.0)), grad_clip=1.0, chunk_fn=chunk_fn)
    for _ in range(args.warmup):
        train_step(model, optimizer, batch, device, **kw)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(args.steps):
        train_step(model, optimizer, batch, device, **kw)
    end.record()
    torch.cuda.synchronize()
    step_ms = start.elapsed_time(end) / args.steps
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
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
    print(f"{args.family} {args.size} (L={size.n_layer}, D={size.n_embd}) batch {batch_size} x {args.context}, "
          f"loss chunk {args.loss_chunk}: step {step_ms:.1f} ms (no profiler), {tokens / step_ms * 1e3 / 1e6:.3f}M "
          f"tokens/s, MFU {tokens / step_ms * 1e3 * flops / 989e12:.1%}; kernels {total:.1f} ms/step "
          f"(GPU idle {max(0.0, step_ms - total):.1f} ms)")
    for group, ms in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"  {group:32s} {ms:7.2f} ms  {ms / total:6.1%}")
    print("  top kernels:")
    for name, ms in sorted(kernels.items(), key=lambda kv: -kv[1])[: args.top]:
        print(f"    {ms:7.2f} ms  {name[:150]}")


if __name__ == "__main__":
    main()

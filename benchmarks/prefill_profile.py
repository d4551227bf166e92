"""Where our RWKV-4 prefill spends its time at the 1.5B shape (random weights, fp16, B=1): median
latency to the last logits and peak memory over the weights for each chunk length, then the GPU
kernels of one prefill grouped by name (matrix products, WKV scan, fused elementwise).

    python benchmarks/prefill_profile.py [--tokens 16384] [--chunks 4096 8192] [--top 15]

Each chunk length compiles the block once (the first call pays it, untimed).
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from rwkvbench import load_model
from rwkvbench.timing import median_ms


def peak_over_weights_gib(model, fn):
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - model.weights_nbytes) / 2**30


def kernel_table(fn, top):
    with profile(activities=[ProfilerActivity.CUDA]) as p:
        fn()
        torch.cuda.synchronize()
    rows = [(e.key, e.device_time_total / 1e3, e.count) for e in p.key_averages()]
    rows = [r for r in rows if r[1] > 0]
    total = sum(r[1] for r in rows)
    print(f"  GPU kernel time {total:.1f} ms; top kernels:")
    for name, ms, n in sorted(rows, key=lambda r: -r[1])[:top]:
        print(f"    {ms:8.2f} ms  {100 * ms / total:5.1f}%  x{n:<5d} {name[:90]}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--tokens", type=int, default=16384)
    ap.add_argument("--chunks", type=int, nargs="+", default=[4096])
    ap.add_argument("--top", type=int, default=15)
    args = ap.parse_args()
    model = load_model("rwkv4_1b5", init="random", device="cuda", dtype="fp16")
    ids = torch.randint(0, model.vocab_size, (1, args.tokens), generator=torch.Generator().manual_seed(0)).cuda()
    for chunk in args.chunks:
        model.prefill_chunk = chunk  # the compiled block recompiles for the new length
        run = lambda: model.prefill(ids, logits="last")  # noqa: E731
        run()  # compiles the block for this chunk length
        ms = median_ms(run, "cuda", 7, 2)
        peak = peak_over_weights_gib(model, run)
        print(f"T={args.tokens} chunk={chunk} ({model.prefill_config}): {ms:.1f} ms, peak {peak:.2f} GiB over the weights")
        kernel_table(run, args.top)


if __name__ == "__main__":
    main()

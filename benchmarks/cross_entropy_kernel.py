"""The Triton cross-entropy kernel (rwkvbench/kernels/cross_entropy_triton.py) alone, per launch setting:
block size, warps and programs per SM, with and without RWKV-LM's L2Wrap term, on one chunk of logits of
the trainer's shape (8192 tokens x the GPT-NeoX vocabulary, bf16), against the bytes floor (the logits
read once and written once at the GPU's memory bandwidth).

    python benchmarks/cross_entropy_kernel.py [--rows 8192] [--vocab 50304] [--tokens ids.npy]

Prints a table, fastest first, with the module's default marked; the launch the trainer uses is the
module's BLOCK / WARPS / PROGRAMS_PER_SM. Medians of CUDA-event timings after warm-up.
"""

from __future__ import annotations

import argparse
import itertools
import statistics

import numpy as np
import pandas as pd
import torch

from rwkvbench.kernels import cross_entropy_triton as ce
from rwkvbench.timing import repeat_ms


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=8192, help="tokens per chunk (the trainer's loss_chunk)")
    p.add_argument("--vocab", type=int, default=50304)
    p.add_argument("--tokens", default=None, help="a .npy of token ids for the targets (default: random ids)")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--bandwidth-tbs", type=float, default=4.8, help="memory bandwidth for the floor (H200: 4.8)")
    args = p.parse_args()
    device = torch.device("cuda")
    g = torch.Generator(device="cuda").manual_seed(0)
    logits = torch.randn(args.rows, args.vocab, device=device, generator=g).to(torch.bfloat16)  # ~N(0, 1)
    targets = (torch.from_numpy(np.load(args.tokens)[: args.rows].astype(np.int64)).to(device) if args.tokens
               else torch.randint(0, args.vocab, (args.rows,), device=device, generator=g))
    work = torch.empty_like(logits)
    floor_ms = 2 * logits.numel() * logits.element_size() / (args.bandwidth_tbs * 1e12) * 1e3
    copy_ms = statistics.median(repeat_ms(lambda: work.copy_(logits), device, args.repeats, 3))

    rows = []
    for block, warps, per_sm, l2wrap in itertools.product([2048, 4096, 8192], [4, 8, 16], [1, 2, 4, 8], [0.0, 1e-4]):
        def run():
            work.copy_(logits)  # the kernel overwrites its input: each launch starts from the same logits
            ce.cross_entropy_rows_(work, targets, args.rows, l2wrap, block, warps, per_sm)
        ms = statistics.median(repeat_ms(run, device, args.repeats, 3)) - copy_ms
        default = (block, warps, per_sm) == (ce.BLOCK, ce.WARPS, ce.PROGRAMS_PER_SM)
        rows.append({"l2wrap": l2wrap > 0, "block": block, "warps": warps, "programs_per_sm": per_sm,
                     "ms": ms, "x_floor": ms / floor_ms, "default": "*" if default else ""})
    df = pd.DataFrame(rows).sort_values(["l2wrap", "ms"])
    print(f"{torch.cuda.get_device_name()}: {args.rows} x {args.vocab} bf16 logits, targets "
          f"{args.tokens or 'random'}; floor (read + write at {args.bandwidth_tbs} TB/s) {floor_ms:.3f} ms; "
          f"the copy that restores the logits ({copy_ms:.3f} ms) subtracted")
    for wrap, part in df.groupby("l2wrap"):
        print(f"\nL2Wrap {'on (RWKV-4)' if wrap else 'off (GPT-NeoX)'}:")
        print(part.head(8).to_string(index=False, float_format="{:.3f}".format))
        print("default:", part[part.default == "*"].to_string(index=False, header=False, float_format="{:.3f}".format))


if __name__ == "__main__":
    main()

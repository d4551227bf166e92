"""Where a decode token's time goes, stage by stage: builds the decode kernel with RWKV4_DECODE_TRACE
(thread 0 of every block stamps clock64() at each stage's start, prologue end, products end and
barrier arrival), runs the 1.5B step program and prints, per kind of stage, the median over blocks
(and the slowest block) of each phase, averaged over the 24 layers.

    python benchmarks/decode_trace.py [RWKV4_DECODE_THREADS=256 RWKV4_DECODE_UNROLL=4 ...] [--ghz 1.98]

Phases: prologue (residual, layer norm, token shift into shared memory), products (the block's GEMV
groups, then its channel step and split product),
arrive (the block's last warp done -> its arrival counted), wait (arrived -> barrier passed). Cycle
counts are per multiprocessor, shown in us at --ghz (the H100's boost clock).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from rwkvbench import load_model
from rwkvbench.kernels.decode_cuda import DecodeProgram
from rwkvbench.models.rwkv4_decode import FusedDecoder
from rwkvbench.timing import median_ms

COUNTER_WORDS, TRACE_STAGES, TRACE_BLOCKS = 64, 128, 264  # csrc/rwkv4_decode.h: the barrier buffer's layout
STAGES = ["ln1 -> k, v, r -> wkv -> output", "ln2 -> ffn k, r -> ffn value"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("defines", nargs="*", help="kernel knobs, e.g. RWKV4_DECODE_THREADS=256")
    ap.add_argument("--ghz", type=float, default=1.98)
    args = ap.parse_args()
    defines = ("RWKV4_DECODE_TRACE", *args.defines)
    threads = int(next((d.split("=")[1] for d in args.defines if d.startswith("RWKV4_DECODE_THREADS=")), 512))
    grid = torch.cuda.get_device_properties(0).multi_processor_count * (512 // threads)  # as the kernel's launch
    if grid > TRACE_BLOCKS:
        raise SystemExit(f"{grid} blocks: the trace build records at most {TRACE_BLOCKS} (csrc/rwkv4_decode.h)")
    model = load_model("rwkv4_1b5", init="random", device="cuda", dtype="fp16")
    with torch.inference_mode():
        dec = FusedDecoder(model.net, 1)
        prog = DecodeProgram(dec.program.stages, dec.ids.device, defines)
        print(f"{' '.join(args.defines) or 'defaults'}: {len(prog.stages)} stages, {grid} blocks, "
              f"program {median_ms(prog, 'cuda', 100, 10):.3f} ms per token (traced build)")
        torch.cuda.synchronize()
        stamps = prog.barrier[COUNTER_WORDS:].view(torch.int64).cpu().numpy()
    n = min(len(prog.stages), TRACE_STAGES)
    t = stamps[: TRACE_STAGES * grid * 4].reshape(TRACE_STAGES, grid, 4)[:n].astype(np.float64) / args.ghz / 1e3
    phases = {"prologue": t[:, :, 1] - t[:, :, 0], "products": t[:, :, 2] - t[:, :, 1],
              "arrive": t[:, :, 3] - t[:, :, 2], "wait": np.full(t.shape[:2], np.nan), "stage": np.full(t.shape[:2], np.nan)}
    phases["wait"][:-1] = t[1:, :, 0] - t[:-1, :, 3]
    phases["stage"][:-1] = t[1:, :, 0] - t[:-1, :, 0]
    print(f"us, median over blocks (slowest block), mean over layers, at {args.ghz} GHz")
    for j, name in enumerate(STAGES):
        rows = list(range(j, n - 1, len(STAGES)))
        cells = [f"{k} {np.mean(np.nanmedian(v[rows], 1)):5.2f} ({np.mean(np.nanmax(v[rows], 1)):5.2f})" for k, v in phases.items()]
        print(f"  {name:32s} " + "  ".join(cells))


if __name__ == "__main__":
    main()

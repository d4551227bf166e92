"""Build variants of the WKV kernel's tuning knobs (tile, steps per thread) and time each at the
shapes the issue's bars name, in one device call. Builds run in parallel processes.

    python benchmarks/tune_wkv.py
"""

from __future__ import annotations

import concurrent.futures as cf

import torch

from rwkvbench.timing import median_ms
from wkv_inputs import random_wkv_inputs

VARIANTS = [
    (),
    ("WKV4_FWD_L=8",),
    ("WKV4_TILE=64", "WKV4_FWD_L=8", "WKV4_BWD_L=4"),
    ("WKV4_TILE=64", "WKV4_FWD_L=16", "WKV4_BWD_L=8"),
    ("WKV4_TILE=256", "WKV4_FWD_L=16", "WKV4_BWD_L=16"),
]
SHAPES = [(1, 4096, 2048), (1, 16384, 2048), (1, 16384, 768), (1, 65536, 2048), (8, 4096, 2048)]


def build(defines):
    from rwkvbench.kernels.cuda_build import load_extension

    return load_extension(defines) is not None



def main():
    torch.cuda.init()
    with cf.ProcessPoolExecutor(len(VARIANTS), mp_context=__import__("multiprocessing").get_context("spawn")) as ex:
        ok = list(ex.map(build, VARIANTS))
    from rwkvbench.kernels.cuda_build import load_extension

    print("variant | " + " | ".join(f"{B}x{T}x{C} fwd/bwd ms" for B, T, C in SHAPES))
    ref = {}
    for defines, built in zip(VARIANTS, ok):
        if not built:
            print(defines, "failed to build")
            continue
        ext = load_extension(defines)
        cells = []
        for B, T, C in SHAPES:
            w, u, k, v = random_wkv_inputs(B, T, C)
            gy = torch.randn_like(k)
            s0 = [torch.zeros(B, C, device="cuda"), torch.zeros(B, C, device="cuda"),
                  torch.full((B, C), -1e38, device="cuda")]
            fwd = median_ms(lambda: ext.forward(w, u, k, v, *s0, False))
            y, aa, bb, pp, seg_states = ext.forward(w, u, k, v, *s0, True)
            bwd = median_ms(lambda: ext.backward(w, u, k, v, gy, seg_states, pp, None, None))
            gk = ext.backward(w, u, k, v, gy, seg_states, pp, None, None)[0]
            key = (B, T, C)
            if key in ref:  # every variant must compute the same thing
                assert (y - ref[key][0]).abs().max() / ref[key][0].abs().max() < 1e-5, defines
                assert (gk - ref[key][1]).abs().max() / ref[key][1].abs().max() < 1e-4, defines
            else:
                ref[key] = (y, gk)
            cells.append(f"{fwd:.3f}/{bwd:.3f}")
        print(" ".join(defines) or "default", "|", " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()

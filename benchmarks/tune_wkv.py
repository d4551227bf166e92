"""Build variants of the WKV kernel's tuning knobs (tile, steps per thread) and time each at the
shapes the issue's bars name, in one device call. Builds run in parallel processes.

    python benchmarks/tune_wkv.py                # inference shapes (batch 1 and 8, long contexts), fp32
    python benchmarks/tune_wkv.py --training     # the ladder's training shapes (batch 32-64, T 1024), bf16
    python benchmarks/tune_wkv.py --training-variants   # the training variants at the inference shapes

A variant with another WKV4_BWD_L also needs kernels/wkv_cuda.py's BACKWARD_SEGMENT changed to match.
"""

from __future__ import annotations

import concurrent.futures as cf

import torch

from rwkvbench.timing import median_ms
from wkv_inputs import random_wkv_inputs

BEFORE = ("WKV4_TILE=64", "WKV4_FWD_MIN_BLOCKS=1", "WKV4_BWD_MIN_BLOCKS=1")  # the default until 2026-11-24
TILE_64 = ("WKV4_TILE=64", "WKV4_FWD_MIN_BLOCKS=8", "WKV4_BWD_MIN_BLOCKS=4")
VARIANTS = [
    (),
    BEFORE,
    TILE_64,
    ("WKV4_TILE=256", "WKV4_FWD_L=16", "WKV4_BWD_L=16", "WKV4_FWD_MIN_BLOCKS=1", "WKV4_BWD_MIN_BLOCKS=1"),
]
# Training shapes have thousands of (batch, channel) chains: occupancy, not parallelism over time, is the
# question there, so these vary the tile and the registers each backward block may hold.
TRAINING_VARIANTS = [
    (),
    BEFORE,
    TILE_64,
    ("WKV4_TILE=64", "WKV4_FWD_MIN_BLOCKS=6", "WKV4_BWD_MIN_BLOCKS=4"),
    ("WKV4_BWD_MIN_BLOCKS=10",),
    ("WKV4_FWD_MIN_BLOCKS=12",),
    ("WKV4_TILE=128", "WKV4_FWD_MIN_BLOCKS=4", "WKV4_BWD_MIN_BLOCKS=2"),
]
SHAPES = [(1, 4096, 2048), (1, 16384, 2048), (1, 16384, 768), (1, 65536, 2048), (8, 4096, 2048)]
TRAINING_SHAPES = [(32, 1024, 128), (32, 1024, 256), (64, 1024, 384), (64, 1024, 512), (64, 1024, 640)]


def registers(module) -> str:
    """Registers per thread of the bf16 forward and backward kernels (cuobjdump; a stack means spills)."""
    import re
    import shutil
    import subprocess

    if shutil.which("cuobjdump") is None:
        return ""
    dump = subprocess.run(["cuobjdump", "--dump-resource-usage", module.__file__], capture_output=True, text=True).stdout
    found = {}
    for name, regs, stack in re.findall(r"Function (\S*wkv4_(?:fwd|bwd)_kernel\S*):\s*REG:(\d+) STACK:(\d+)", dump):
        if "nv_bfloat16" in name:
            found["fwd" if "fwd" in name else "bwd"] = regs + (f"+{stack}B stack" if stack != "0" else "")
    return f" (registers fwd {found.get('fwd', '?')}, bwd {found.get('bwd', '?')})"


def build(defines):
    from rwkvbench.kernels.cuda_build import load_extension

    return load_extension(defines) is not None



def main():
    import argparse

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--training", action="store_true", help="the ladder's training shapes in bf16")
    p.add_argument("--training-variants", action="store_true",
                   help="the training variants at the inference shapes (a knob both passes share must not slow inference)")
    args = p.parse_args()
    shapes, dtype = (TRAINING_SHAPES, torch.bfloat16) if args.training else (SHAPES, torch.float32)
    variants = TRAINING_VARIANTS if args.training or args.training_variants else VARIANTS
    tol_y, tol_g = (1e-2, 2e-2) if dtype == torch.bfloat16 else (1e-5, 1e-4)  # bf16: a rounding or two
    torch.cuda.init()
    with cf.ProcessPoolExecutor(len(variants), mp_context=__import__("multiprocessing").get_context("spawn")) as ex:
        ok = list(ex.map(build, variants))
    from rwkvbench.kernels.cuda_build import load_extension

    print("variant | " + " | ".join(f"{B}x{T}x{C} fwd/bwd ms" for B, T, C in shapes))
    ref = {}
    for defines, built in zip(variants, ok):
        if not built:
            print(defines, "failed to build")
            continue
        ext = load_extension(defines)
        cells = []
        for B, T, C in shapes:
            w, u, k, v = random_wkv_inputs(B, T, C, dtype)
            # seeded: every variant must see the same gradient (an unseeded one made all but the first 'wrong')
            gy = torch.randn(k.shape, device=k.device, generator=torch.Generator("cuda").manual_seed(1)).to(k.dtype)
            s0 = [torch.zeros(B, C, device="cuda"), torch.zeros(B, C, device="cuda"),
                  torch.full((B, C), -1e38, device="cuda")]
            fwd = median_ms(lambda: ext.forward(w, u, k, v, *s0, False))
            y, aa, bb, pp, seg_states = ext.forward(w, u, k, v, *s0, True)
            bwd = median_ms(lambda: ext.backward(w, u, k, v, gy, seg_states, pp, None, None))
            gk = ext.backward(w, u, k, v, gy, seg_states, pp, None, None)[0]
            key = (B, T, C)
            ref.setdefault(key, (y, gk))  # every variant must compute what the first (the default) does
            err_y = ((y - ref[key][0]).float().abs().max() / ref[key][0].float().abs().max()).item()
            err_g = ((gk - ref[key][1]).float().abs().max() / ref[key][1].float().abs().max()).item()
            wrong = "" if err_y < tol_y and err_g < tol_g else f" WRONG (rel. err. y {err_y:.1e}, dk {err_g:.1e})"
            cells.append(f"{fwd:.3f}/{bwd:.3f}{wrong}")  # a wrong variant's times are shown, not chosen
        print((" ".join(defines) or "default") + registers(ext), "|", " | ".join(cells), flush=True)


if __name__ == "__main__":
    main()

"""Side by side on one GPU, one run: our WKV kernel against the `rwkv` package's (ChatRWKV / RWKV-LM
one-thread-per-channel kernel), forward and backward, with % of the bytes floor.

    RWKV_CUDA_ON=1 python benchmarks/compare_wkv_kernels.py [--out table.csv]

The bytes floor is reading k and v once and writing y once at the measured device-to-device copy
bandwidth. Times are medians of CUDA-event-timed calls after warm-up; the backward is the backward
kernel alone (what autograd adds on top is not the kernel's).
"""

from __future__ import annotations

import argparse
import os

import torch

from rwkvbench.timing import median_ms
from wkv_inputs import random_wkv_inputs

os.environ.setdefault("RWKV_CUDA_ON", "1")
SHAPES = [(1, 4096, 2048), (1, 16384, 2048), (1, 16384, 768), (1, 65536, 2048), (8, 4096, 2048)]



def copy_bandwidth() -> float:
    """Bytes/s of a large device-to-device copy (read + write)."""
    x = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    ms = median_ms(lambda: y.copy_(x), repeats=20)
    return 2 * x.numel() / (ms * 1e-3)


def reference_kernel():
    try:
        import rwkv.model  # noqa: F401  (RWKV_CUDA_ON=1 compiles and registers torch.ops.rwkv)

        return torch.ops.rwkv.wkv_forward
    except Exception as e:  # noqa: BLE001
        print(f"rwkv package kernel unavailable: {e}")
        return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out")
    args = ap.parse_args()
    from rwkvbench.kernels.cuda_build import load_extension
    from rwkvbench.kernels.wkv_cuda import wkv4_cuda

    ref = reference_kernel()
    bw = copy_bandwidth()
    print(f"device: {torch.cuda.get_device_name()}, copy bandwidth {bw / 1e12:.2f} TB/s")
    rows = []
    for B, T, C in SHAPES:
        w, u, k, v = random_wkv_inputs(B, T, C)
        floor_ms = 3 * k.numel() * 4 / bw * 1e3
        ext = load_extension()
        ours = median_ms(lambda: ext.forward(w, u, k, v, None, None, None, False))  # the kernel alone
        with torch.no_grad():
            api = median_ms(lambda: wkv4_cuda(w, u, k, v))  # through the Python entry point
        theirs = float("nan")
        if ref is not None:
            y = torch.empty_like(k)
            states = [torch.zeros(B, C, device="cuda") for _ in range(2)] + [torch.full((B, C), -1e38, device="cuda")]
            theirs = median_ms(lambda: ref(B, T, C, w, u, k, v, y, *states))
            y_ours, _ = wkv4_cuda(w, u, k, v)
            ref(B, T, C, w, u, k, v, y, *[s.fill_(0) if i < 2 else s.fill_(-1e38) for i, s in enumerate(states)])
            agree = ((y_ours - y).abs().max() / y.abs().max()).item()
        s0 = [torch.zeros(B, C, device="cuda"), torch.zeros(B, C, device="cuda"), torch.full((B, C), -1e38, device="cuda")]
        _, _, _, pp, seg_states = ext.forward(w, u, k, v, *s0, True)
        gy = torch.randn_like(k)
        bwd = median_ms(lambda: ext.backward(w, u, k, v, gy, seg_states, pp, None, None))
        rows.append(dict(B=B, T=T, C=C, ours_fwd_ms=ours, ours_api_ms=api, rwkv_pkg_fwd_ms=theirs, speedup=theirs / ours,
                         floor_ms=floor_ms, pct_of_floor=100 * floor_ms / ours, ours_bwd_ms=bwd,
                         bwd_over_fwd=bwd / ours, rel_diff_vs_rwkv_pkg=agree if ref else float("nan")))
    import pandas as pd

    df = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.float_format", "{:.4g}".format):
        print(df.to_string(index=False))
    if args.out:
        df.to_csv(args.out, index=False)


if __name__ == "__main__":
    main()

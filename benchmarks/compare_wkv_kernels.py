"""Side by side on one GPU, one run: our WKV kernel against the `rwkv` package's (ChatRWKV / RWKV-LM
one-thread-per-channel kernel), forward and backward, with % of the bytes floor.

    RWKV_CUDA_ON=1 python benchmarks/compare_wkv_kernels.py [--out table.csv] [--results DIR] [--max-t 1048576]

The shapes are the benchmark suite's (test_wkv_kernel.py) plus a sweep of T at B=1, C=2048 for the
kernel figure. `--results DIR` appends tidy rows (suite=kernel) to DIR/results.parquet (+ .csv) for
`python -m rwkvbench.report DIR`: model = the implementation, task = wkv4_forward / wkv4_backward,
context_len = T, batch_size = B, variant = "C=...;dtype=float32"; metrics kernel_ms (median) with
kernel_ms_p10 / kernel_ms_p90, floor_ms, pct_of_floor, and for ours api_ms (through the Python entry
point) and copy_bandwidth_bytes_per_s, for the package max_rel_diff (its output against ours).

The bytes floor is the time to move the kernel's compulsory bytes once at the measured device-to-device
copy bandwidth: the forward reads k and v and writes y (3 tensors), the backward reads k, v and dy and
writes dk and dv (5). Times are medians of CUDA-event-timed calls after warm-up (fewer repeats where a
call is slow); the backward is the backward kernel alone (what autograd adds on top is not the kernel's).
The package's kernel indexes with 32-bit ints, so it runs only where B*T*C < 2^31.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch
from wkv_inputs import random_wkv_inputs

from rwkvbench.timing import median_ms, repeat_ms, timed_ms

os.environ.setdefault("RWKV_CUDA_ON", "1")
SHAPES = [(1, 4096, 2048), (1, 16384, 2048), (1, 16384, 768), (1, 65536, 2048), (8, 4096, 2048)]
SWEEP = [(1, T, 2048) for T in (1024, 262144, 1048576)]  # with SHAPES: T = 1K ... 1M at B=1, C=2048
PKG_MAX_ELEMENTS = 2**31 - 1
BUDGET_S = 3.0  # per timed point


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


def package_name() -> str:
    try:
        from importlib.metadata import version

        return f"rwkv {version('rwkv')}"
    except Exception:  # noqa: BLE001
        return "rwkv"


def times_ms(fn) -> list[float]:
    """CUDA-event times of fn: 30 after 5 warm-up calls, fewer where one call is slow."""
    dev = torch.device("cuda")
    first = timed_ms(fn, dev)
    n = max(5, min(30, int(BUDGET_S * 1e3 / max(first, 1e-3))))
    return repeat_ms(fn, dev, n, warmup=2 if n < 30 else 5)


def timing_rows(times: list[float], floor_ms: float) -> list[dict]:
    med = float(np.median(times))
    n = len(times)
    return [{"metric": "kernel_ms", "value": med, "n": n},
            {"metric": "kernel_ms_p10", "value": float(np.percentile(times, 10)), "n": n},
            {"metric": "kernel_ms_p90", "value": float(np.percentile(times, 90)), "n": n},
            {"metric": "floor_ms", "value": floor_ms, "n": 1},
            {"metric": "pct_of_floor", "value": 100 * floor_ms / med, "n": n}]


def measure(B, T, C, ext, ref, bw, pkg) -> tuple[list[dict], dict]:
    """Tidy rows and one summary line for a shape."""
    from rwkvbench.kernels.wkv_cuda import wkv4_cuda

    w, u, k, v = random_wkv_inputs(B, T, C)
    floor = 3 * k.numel() * 4 / bw * 1e3
    key = {"context_len": T, "batch_size": B, "variant": f"C={C};dtype=float32"}
    fwd = times_ms(lambda: ext.forward(w, u, k, v, None, None, None, False))  # the kernel alone
    with torch.no_grad():
        api = median_ms(lambda: wkv4_cuda(w, u, k, v), repeats=10, warmup=2)  # through the Python entry point
    rows = [{**key, **r, "model": "rwkvbench", "task": "wkv4_forward"}
            for r in timing_rows(fwd, floor) + [{"metric": "api_ms", "value": api, "n": 10},
                                                {"metric": "copy_bandwidth_bytes_per_s", "value": bw, "n": 20}]]
    line = dict(B=B, T=T, C=C, ours_fwd_ms=float(np.median(fwd)), ours_api_ms=api, floor_ms=floor)
    theirs, agree = float("nan"), float("nan")
    if ref is not None and B * T * C <= PKG_MAX_ELEMENTS:
        y = torch.empty_like(k)

        def fresh():
            return [torch.zeros(B, C, device="cuda"), torch.zeros(B, C, device="cuda"),
                    torch.full((B, C), -1e38, device="cuda")]

        states = fresh()
        pkg_t = times_ms(lambda: ref(B, T, C, w, u, k, v, y, *states))
        ref(B, T, C, w, u, k, v, y, *fresh())
        y_ours, _ = wkv4_cuda(w, u, k, v)
        agree = ((y_ours - y).abs().max() / y.abs().max()).item()
        theirs = float(np.median(pkg_t))
        rows += [{**key, **r, "model": pkg, "task": "wkv4_forward"}
                 for r in timing_rows(pkg_t, floor) + [{"metric": "max_rel_diff", "value": agree, "n": 1}]]
    elif ref is not None:  # a row that says why the package has no time here (the figure marks it)
        rows.append({**key, "model": pkg, "task": "wkv4_forward", "metric": "skipped", "value": 1.0, "n": 1,
                     "note": f"the rwkv package indexes with int32: B*T*C = {B * T * C:,} > {PKG_MAX_ELEMENTS:,}"})
        del y, y_ours
    s0 = [torch.zeros(B, C, device="cuda"), torch.zeros(B, C, device="cuda"), torch.full((B, C), -1e38, device="cuda")]
    _, _, _, pp, seg_states = ext.forward(w, u, k, v, *s0, True)
    gy = torch.randn_like(k)
    bwd = times_ms(lambda: ext.backward(w, u, k, v, gy, seg_states, pp, None, None))
    rows += [{**key, **r, "model": "rwkvbench", "task": "wkv4_backward"} for r in timing_rows(bwd, floor * 5 / 3)]
    ours = line["ours_fwd_ms"]
    line.update(rwkv_pkg_fwd_ms=theirs, speedup=theirs / ours, pct_of_floor=100 * floor / ours,
                ours_bwd_ms=float(np.median(bwd)), bwd_over_fwd=float(np.median(bwd)) / ours,
                rel_diff_vs_rwkv_pkg=agree)
    return rows, line


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", help="the summary table as CSV")
    ap.add_argument("--results", help="a results folder to append tidy rows (suite=kernel) to")
    ap.add_argument("--max-t", type=int, default=1 << 20, help="skip shapes with a longer T (default 1M)")
    args = ap.parse_args()
    from rwkvbench.kernels.cuda_build import load_extension
    from rwkvbench.results import COLUMNS, ResultsWriter

    ref = reference_kernel()
    pkg = package_name()
    ext = load_extension()
    bw = copy_bandwidth()
    gpu = torch.cuda.get_device_name()
    print(f"device: {gpu}, copy bandwidth {bw / 1e12:.2f} TB/s")
    writer = ResultsWriter(args.results) if args.results else None
    common = {"family": "rwkv", "dtype": "float32", "device": "cuda", "suite": "kernel"}
    if "device_name" in COLUMNS:
        common["device_name"] = gpu
    lines = []
    for B, T, C in sorted(set(SHAPES + SWEEP), key=lambda s: (s[0], s[2], s[1])):
        if T > args.max_t:
            continue
        try:
            rows, line = measure(B, T, C, ext, ref, bw, pkg)
        except torch.OutOfMemoryError:
            print(f"B={B} T={T} C={C}: out of memory")
            rows, line = [{"model": "rwkvbench", "task": "wkv4_forward", "context_len": T, "batch_size": B,
                           "variant": f"C={C};dtype=float32", "metric": "oom", "value": 1.0, "n": 1}], None
        torch.cuda.empty_cache()
        if writer is not None:
            writer.append(rows, **common)
        if line:
            lines.append(line)
    import pandas as pd

    df = pd.DataFrame(lines)
    with pd.option_context("display.width", 200, "display.float_format", "{:.4g}".format):
        print(df.to_string(index=False))
    if args.out:
        df.to_csv(args.out, index=False)
    if writer is not None:
        print(f"tidy rows: {writer.path}")


if __name__ == "__main__":
    main()

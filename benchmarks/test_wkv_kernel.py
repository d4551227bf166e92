"""Speed of the CUDA WKV kernel (pytest-benchmark). Each timed call ends with a synchronize.

Compare against the committed baseline of your GPU, failing on a regression:

    pytest benchmarks/test_wkv_kernel.py --benchmark-storage=benchmarks/baselines/$(python -c \
      "import torch; print(torch.cuda.get_device_name().replace(' ', '_'))") \
      --benchmark-compare=0001 --benchmark-compare-fail=median:15%

Record a new baseline with --benchmark-save=baseline instead of the two compare flags.
"""

import pytest
import torch
from wkv_inputs import random_wkv_inputs

SHAPES = [(1, 4096, 2048), (1, 16384, 2048), (1, 16384, 768), (1, 65536, 2048), (8, 4096, 2048)]




def bench(benchmark, fn):
    def run():
        fn()
        torch.cuda.synchronize()

    benchmark.pedantic(run, warmup_rounds=5, rounds=50, iterations=1)


@pytest.mark.parametrize("B,T,C", SHAPES, ids=lambda s: str(s))
def test_forward_fp32(benchmark, B, T, C):
    from rwkvbench.kernels.wkv_cuda import wkv4_cuda

    w, u, k, v = random_wkv_inputs(B, T, C)
    bench(benchmark, lambda: wkv4_cuda(w, u, k, v))


@pytest.mark.parametrize("B,T,C", SHAPES, ids=lambda s: str(s))
def test_forward_backward_fp32(benchmark, B, T, C):
    from rwkvbench.kernels.wkv_cuda import wkv4_cuda

    w, u, k, v = random_wkv_inputs(B, T, C, grad=True)
    gy = torch.randn(B, T, C, device="cuda")

    def fwd_bwd():
        y, _ = wkv4_cuda(w, u, k, v)
        torch.autograd.grad(y, (k, v), gy)

    bench(benchmark, fwd_bwd)

"""Choose the implementation for a call: our CUDA kernels or the plain PyTorch references.

`wkv4` and `norm_shift` are the entry points the model uses: CUDA tensors go to our kernels (csrc/),
everything else (float64, which is for references, and single steps) to the plain PyTorch code. The WKV
kernel has a backward (kernels/wkv_cuda.py); the layer norm + token shift kernel has none, so a call that
autograd records takes its reference. RWKVBENCH_WKV=cuda|reference forces one path ("cuda" raises if the
kernel cannot run: no CUDA tensor, or no build); the default is auto.
"""

from __future__ import annotations

import os

import torch

from rwkvbench.kernels.norm_shift_reference import norm_shift_reference
from rwkvbench.kernels.wkv_reference import wkv4_reference

KERNEL_ENV = "RWKVBENCH_WKV"
KERNELS = ("auto", "cuda", "reference")  # the choices of RWKVBENCH_WKV and of the run's wkv_kernel key


def kernel_choice() -> str:
    choice = os.environ.get(KERNEL_ENV, "auto")
    if choice not in KERNELS:
        raise ValueError(f"{KERNEL_ENV}={choice!r}; expected auto, cuda or reference")
    return choice


def use_cuda_kernel(k: torch.Tensor) -> bool:
    choice = kernel_choice()
    if choice == "cuda" and not k.is_cuda:  # forced: never a silent fallback
        from rwkvbench.errors import ConfigError

        raise ConfigError(f"{KERNEL_ENV}=cuda forces the CUDA kernel, but the model runs on {k.device}; "
                          f"run it on a CUDA device or use auto/reference")
    if choice == "reference" or not k.is_cuda or k.dtype == torch.float64:
        return False
    from rwkvbench.kernels.cuda_build import load_extension

    if load_extension() is None:
        if choice == "cuda":
            from rwkvbench.kernels.cuda_build import build_error

            raise RuntimeError(f"{KERNEL_ENV}=cuda but the CUDA WKV kernel could not be built ({build_error()})")
        return False
    return True


def wkv4(w, u, k, v, state=None):
    """WKV-4 over (B, T, C) keys and values with state carry. See wkv_reference for the contract."""
    # One step is a handful of elementwise ops: the plain expression, which a compiled decode step
    # fuses into its neighbours, beats launching the scan kernel.
    # Inside torch.compile the choice was made before compiling (the kernel is a custom op there).
    if k.shape[1] > 1 and (torch.compiler.is_compiling() or use_cuda_kernel(k)):
        from rwkvbench.kernels.wkv_cuda import wkv4_cuda

        return wkv4_cuda(w, u, k, v, state)
    return wkv4_reference(w, u, k, v, state)


def needs_grad(*tensors) -> bool:
    """Whether autograd would record an op on these tensors (None entries are skipped)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def norm_shift(x, add, weight, bias, last, mixes, dtype):
    """(x + add) -> layer norm -> token shift -> one input per mix, in `dtype`. See norm_shift_reference."""
    # Eager inference only: inside a compiled block (full prefill chunks, the decode step, training)
    # inductor fuses the plain expression with its neighbours as well as the kernel does (measured at 16K
    # tokens: the kernel as an opaque op made the compiled prefill slower). The kernel has no backward,
    # so anything autograd records (eager training) takes the reference, which has one.
    if (x.shape[1] > 1 and not torch.compiler.is_compiling() and not needs_grad(x, add, weight, bias, last, *mixes)
            and use_cuda_kernel(x)):
        from rwkvbench.kernels.norm_shift_cuda import norm_shift_cuda

        return norm_shift_cuda(x, add, weight, bias, last, mixes, dtype)
    return norm_shift_reference(x, add, weight, bias, last, mixes, dtype)
